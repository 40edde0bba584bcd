"""Portcullis' own secret rules.

Which kinds exist was informed by gitleaks' rule catalogue (``config/gitleaks.toml``); the
patterns, keywords, thresholds and checks here are written for this project (no text copied).
Every pattern is RE2 syntax over the :mod:`.view` bytes and captures the credential itself as
group 1 (the part a redaction removes). Values longer than the scanner's chunk overlap
(:data:`MAX_MATCH_CHARS`; a JWT with a huge payload, a private-key block past 4096-bit RSA) are
reported up to the end of the chunk's window: still found, the span is cut short.

A rule with keywords runs only on chunks where the keyword prefilter saw one of them (lower-case,
matched in the lower-cased view); a rule without keywords runs on every chunk, so it must be a
narrow pattern. Generic kinds (a value assigned to a name such as ``password``) carry an entropy
threshold; kinds with a checksum verify it and flag the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from portcullis.content import validators
from portcullis.content.findings import FLAG_CHECKSUM_OK, FLAG_PARTIAL, FLAG_TEST_VALUE

MAX_MATCH_CHARS = 20_000

Check = Callable[[str], "frozenset[str] | None"]  # None rejects the candidate; else flags for the finding

# an assignment between a name and its value: `key = "v"`, `key: v`, `"key": "v"`, `key => v`, `KEY := v`
_ASSIGN = r"""[\w.-]{0,25}["'`]?[ \t]{0,3}(?:=|:=|::|:|=>|\?=|,)[ \t]{0,3}["'`]?"""
_END = r"""(?:[^A-Za-z0-9_-]|$)"""  # a token ends at a character that cannot continue it
_B64_BODY = r"""(?:[A-Za-z0-9+/=:,.\t \r\n-]|\\r|\\n)"""  # PEM body: base64, headers, line breaks (real or \n)


@dataclass(frozen=True, slots=True)
class SecretRule:
    rule_id: str
    kind: str
    keywords: tuple[str, ...]
    pattern: str
    confidence: float = 0.9
    min_entropy: float | None = None
    check: Check | None = None
    case_insensitive: bool = False
    group: int = 1
    # where a match can lie around a keyword hit at p: from p - lead to p + reach (the prefilter runs the
    # pattern only there); generous, and MAX_MATCH_CHARS for kinds without a length bound
    lead: int = 48
    reach: int = 512
    # bytes every match holds after its keyword (an URL's credentials end at "@"): a hit with none of
    # them within ``reach`` is skipped without running the pattern
    requires: bytes = b""


_NO_FLAGS: frozenset[str] = frozenset()


def _github(value: str) -> frozenset[str] | None:
    return frozenset({FLAG_CHECKSUM_OK}) if validators.github_checksum_ok(value) else _NO_FLAGS


def _aws_key_id(value: str) -> frozenset[str] | None:
    return frozenset({FLAG_TEST_VALUE}) if value.endswith("EXAMPLE") else _NO_FLAGS


def _jwt(value: str) -> frozenset[str] | None:
    return _NO_FLAGS if validators.jwt_header_ok(value) else None


def _not_placeholder(value: str) -> frozenset[str] | None:
    return None if validators.placeholder(value) else _NO_FLAGS


def _generic(value: str) -> frozenset[str] | None:
    return _NO_FLAGS if validators.generic_secret_ok(value, 3.0) else None


def _pem(value: str) -> frozenset[str] | None:
    return _NO_FLAGS if "-----END" in value else frozenset({FLAG_PARTIAL})


def _rule(rule_id: str, kind: str, keywords: str, pattern: str, **options: object) -> SecretRule:
    lead, reach = _NEAR.get(rule_id, (48, 512))
    return SecretRule(f"secret.{rule_id}", kind, tuple(keywords.split()), pattern, lead=lead, reach=reach,
                      **options)  # type: ignore[arg-type]


_UNBOUNDED = MAX_MATCH_CHARS
_NEAR: dict[str, tuple[int, int]] = {  # (lead, reach) per rule; the default (48, 512) suits assignments
    "aws.access_key_id": (1, 32), "gcp.api_key": (1, 48), "gcp.service_account_key_id": (2, 96),
    "google.oauth_client_secret": (1, 48), "google.oauth_access_token": (1, _UNBOUNDED),
    "azure.storage_account_key": (1, 128), "azure.shared_access_key": (1, 96), "azure.sas_signature": (1, 160),
    "azure.ad_client_secret": (6, 64), "digitalocean.token": (1, 80), "heroku.api_key_v2": (1, 80),
    "github.token": (1, 48), "github.fine_grained_pat": (1, 104), "gitlab.token": (1, 160),
    "gitlab.trigger_token": (1, 56), "gitlab.runner_registration": (1, 64), "npm.token": (1, 48),
    "pypi.token": (1, _UNBOUNDED), "atlassian.api_token": (1, 224), "linear.api_key": (1, 56),
    "doppler.token": (1, 64), "vault.token": (1, 416), "slack.token": (1, 320), "slack.app_token": (1, 160),
    "slack.webhook": (12, 224), "discord.bot_token": (128, 512), "discord.webhook": (16, 224),
    "telegram.bot_token": (12, 48),
    "mailgun.api_key": (1, 256), "sendgrid.api_key": (1, 80), "twilio.api_key": (1, 40),
    "stripe.secret_key": (1, 264), "stripe.publishable_key": (1, 264), "stripe.webhook_secret": (1, 80),
    "shopify.token": (1, 48), "openai.api_key": (232, 240), "anthropic.api_key": (1, 144),
    "huggingface.token": (1, 48), "jwt": (1, _UNBOUNDED), "private_key.pem": (1, _UNBOUNDED),
    "private_key.putty": (1, _UNBOUNDED), "connection_string.password": (32, 448), "url.basic_auth": (12, 448),
}


RULES: tuple[SecretRule, ...] = (
    # --- cloud providers
    _rule("aws.access_key_id", "aws_access_key_id", "akia asia abia acca a3t",
          r"\b((?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z2-7]{16})\b", confidence=0.95, check=_aws_key_id),
    _rule("aws.secret_access_key", "aws_secret_access_key", "aws amazon secretaccesskey",
          r"(?i)(?:aws|amazon|secretaccesskey)" + _ASSIGN + r"([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
          min_entropy=3.5),
    _rule("gcp.api_key", "gcp_api_key", "aiza", r"\b(AIza[A-Za-z0-9_-]{35})" + _END, confidence=0.95),
    _rule("gcp.service_account_key_id", "gcp_service_account_key", "private_key_id",
          r"""["']?private_key_id["']?\s{0,3}[:=]\s{0,3}["']([a-f0-9]{40})["']"""),
    _rule("google.oauth_client_secret", "google_oauth_client_secret", "gocspx-",
          r"\b(GOCSPX-[A-Za-z0-9_-]{28})" + _END, confidence=0.95),
    _rule("google.oauth_access_token", "google_oauth_access_token", "ya29.",
          r"\b(ya29\.[A-Za-z0-9_-]{30,})" + _END),
    _rule("azure.storage_account_key", "azure_storage_key", "accountkey",
          r"(?i)AccountKey\s{0,3}=\s{0,3}([A-Za-z0-9+/]{86}==)", confidence=0.95),
    _rule("azure.shared_access_key", "azure_storage_key", "sharedaccesskey",
          r"(?i)SharedAccessKey\s{0,3}=\s{0,3}([A-Za-z0-9+/]{42,44}=)", confidence=0.95),
    _rule("azure.sas_signature", "azure_sas_token", "sig=",
          r"[?&;]sig=([A-Za-z0-9%+/]{40,120}(?:=|%3[Dd]){0,2})", min_entropy=3.5),
    _rule("azure.ad_client_secret", "azure_ad_client_secret", "q~",
          r"(?:^|[^A-Za-z0-9_~.-])([A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~.-]|$)",
          min_entropy=3.0),
    _rule("digitalocean.token", "digitalocean_token", "dop_v1_ doo_v1_ dor_v1_",
          r"\b(do[opr]_v1_[a-f0-9]{64})\b", confidence=0.95),
    _rule("heroku.api_key_v2", "heroku_api_key", "hrku-", r"\b(HRKU-[A-Za-z0-9_-]{58,64})" + _END, confidence=0.95),
    _rule("heroku.api_key", "heroku_api_key", "heroku",
          r"(?i)heroku" + _ASSIGN + r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b",
          confidence=0.8),
    # --- source hosting and package registries
    _rule("github.token", "github_token", "ghp_ gho_ ghu_ ghs_ ghr_",
          r"\b((?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36})\b", confidence=0.95, check=_github),
    _rule("github.fine_grained_pat", "github_token", "github_pat_",
          r"\b(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b", confidence=0.99),
    _rule("gitlab.token", "gitlab_token",
          "glpat- gldt- glrt- glcbt- gloas- glsoat- glft- glimt- glagent- glffct- glwt-",
          r"\b((?:glpat|gldt|glrt|glcbt|gloas|glsoat|glft|glimt|glagent|glffct|glwt)-[A-Za-z0-9_.-]{20,120})"
          + _END, confidence=0.95),
    _rule("gitlab.trigger_token", "gitlab_token", "glptt-", r"\b(glptt-[0-9a-f]{40})\b", confidence=0.95),
    _rule("gitlab.runner_registration", "gitlab_token", "gr1348941",
          r"\b(GR1348941[A-Za-z0-9_-]{20,40})" + _END, confidence=0.95),
    _rule("npm.token", "npm_token", "npm_", r"\b(npm_[A-Za-z0-9]{36})\b", confidence=0.95),
    _rule("pypi.token", "pypi_token", "pypi-ageichlwas5vcmc pypi-agendgvzdc5wexbplm9yzw",
          r"\b(pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,})" + _END, confidence=0.99),
    _rule("atlassian.api_token", "atlassian_token", "atatt3",
          r"\b(ATATT3[A-Za-z0-9_=-]{180,200})" + _END, confidence=0.95),
    _rule("atlassian.legacy_token", "atlassian_token", "atlassian confluence jira",
          r"(?i)(?:atlassian|confluence|jira)" + _ASSIGN + r"([A-Za-z0-9]{24})\b", min_entropy=3.5, confidence=0.7),
    _rule("linear.api_key", "linear_api_key", "lin_api_", r"\b(lin_api_[A-Za-z0-9]{40})\b", confidence=0.95),
    _rule("doppler.token", "doppler_token", "dp.pt. dp.st. dp.sa. dp.ct. dp.scim. dp.audit.",
          r"\b(dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44})\b", confidence=0.95),
    _rule("vault.token", "vault_token", "hvs. hvb.", r"\b(hv[sb]\.[A-Za-z0-9_-]{24,400})" + _END, confidence=0.9),
    _rule("vault.legacy_token", "vault_token", "vault",
          r"(?i)vault" + _ASSIGN + r"(s\.[A-Za-z0-9]{24})\b", confidence=0.8),
    # --- chat, mail and messaging
    _rule("slack.token", "slack_token", "xoxa- xoxb- xoxp- xoxo- xoxr- xoxs- xoxe",
          r"\b(xox(?:[abposr]-|e\.xox[bp]-|e-)[0-9A-Za-z-]{10,300})" + _END, confidence=0.95),
    _rule("slack.app_token", "slack_token", "xapp-", r"\b(xapp-\d-[A-Z0-9]{6,20}-\d{6,20}-[a-f0-9]{20,80})\b"),
    _rule("slack.webhook", "slack_webhook", "hooks.slack.com",
          r"(?i)(https?://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/+-]{20,160})",
          confidence=0.95),
    _rule("discord.bot_token", "discord_token", "discord bot",
          r"(?:^|[^A-Za-z0-9_.-])([MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40})" + _END,
          min_entropy=3.5, confidence=0.8),
    _rule("discord.webhook", "discord_webhook", "discord",
          r"(?i)(https?://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d{5,30}/[A-Za-z0-9_-]{60,80})"),
    _rule("telegram.bot_token", "telegram_bot_token", ":aa",
          r"(?:^|[^0-9])(\d{8,10}:AA[A-Za-z0-9_-]{33})" + _END, confidence=0.9),
    _rule("mailgun.api_key", "mailgun_api_key", "key- mailgun",
          r"\b(key-[0-9a-f]{32})\b", confidence=0.85),
    _rule("sendgrid.api_key", "sendgrid_api_key", "sg.",
          r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})" + _END, confidence=0.99),
    _rule("twilio.api_key", "twilio_api_key", " ".join("sk" + c for c in "0123456789abcdef"),
          r"\b(SK[0-9a-fA-F]{32})\b", confidence=0.8),
    _rule("twilio.auth_token", "twilio_api_key", "twilio",
          r"(?i)twilio" + _ASSIGN + r"([a-f0-9]{32})\b", confidence=0.8),
    # --- payments, SaaS, AI providers
    _rule("stripe.secret_key", "stripe_key", "sk_live_ sk_test_ rk_live_ rk_test_",
          r"\b((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,247})\b", confidence=0.99),
    _rule("stripe.publishable_key", "stripe_publishable_key", "pk_live_",
          r"\b(pk_live_[A-Za-z0-9]{20,247})\b", confidence=0.6),
    _rule("stripe.webhook_secret", "stripe_key", "whsec_", r"\b(whsec_[A-Za-z0-9]{32,64})\b", confidence=0.95),
    _rule("shopify.token", "shopify_token", "shpat_ shpca_ shppa_ shpss_",
          r"\b(shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32})\b", confidence=0.95),
    _rule("datadog.api_key", "datadog_api_key", "datadog dd_api dd_app dd-api dd-app dd_client",
          r"(?i)(?:datadog|dd[_-]api[_-]?key|dd[_-]app(?:lication)?[_-]?key|dd[_-]client[_-]token)" + _ASSIGN
          + r"([a-f0-9]{32}|[a-f0-9]{40})\b", confidence=0.85),
    _rule("openai.api_key", "openai_api_key", "t3blbkfj",
          r"\b(sk-(?:[a-z]{2,12}-)?[A-Za-z0-9_-]{16,200}T3BlbkFJ[A-Za-z0-9_-]{16,200})" + _END, confidence=0.99),
    _rule("anthropic.api_key", "anthropic_api_key", "sk-ant-",
          r"\b(sk-ant-[a-z]{2,8}\d{2}-[A-Za-z0-9_-]{80,120})" + _END, confidence=0.99),
    _rule("huggingface.token", "huggingface_token", "hf_", r"\b(hf_[A-Za-z0-9]{34,40})\b", min_entropy=3.5),
    # --- structured credentials
    _rule("jwt", "jwt", "eyj",
          r"\b(eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*)" + _END,
          confidence=0.9, check=_jwt),
    _rule("private_key.pem", "private_key", "-----begin",
          r"(-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----(?:" + _B64_BODY
          + r"{16,}?-----END[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----|" + _B64_BODY + r"{16,}))",
          confidence=0.99, check=_pem),
    _rule("private_key.putty", "private_key", "putty-user-key-file-",
          r"(PuTTY-User-Key-File-\d: [^\r\n]{1,60}[\s\S]*?Private-MAC: [0-9a-f]{20,128})",
          confidence=0.99),
    _rule("connection_string.password", "connection_string_password", "://",
          r"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|oracle|"
          r"cockroachdb|clickhouse|neo4j(?:\+s)?|couchdb|cassandra|ldaps?|ftps?|sftp|smtps?|jdbc:[a-z0-9]{2,20})"
          r"://[^\s:/@\"'<>]{0,128}:([^\s/@\"'<>]{1,256})@", confidence=0.95, check=_not_placeholder,
          requires=b"@"),
    _rule("url.basic_auth", "url_basic_auth", "://",
          r"(?i)\b(?:https?|wss?|git|ssh|svn)://[^\s:/@\"'<>]{1,128}:([^\s/@\"'<>]{1,256})@[A-Za-z0-9.\[-]",
          confidence=0.9, check=_not_placeholder, requires=b"@"),
    _rule("generic.assignment", "generic_secret",
          "password passwd pwd secret api_key apikey api-key access_key accesskey access-key token credential "
          "private_key private-key client_secret auth",
          r"(?i)(?:^|[^A-Za-z0-9])[A-Za-z0-9_.-]{0,30}(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|"
          r"private[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer[_-]?token|token|"
          r"credentials?)[\"'`]?[ \t]{0,3}(?:=|:=|:|=>)[ \t]{0,3}[\"'`]?([^\s\"'`,;<>()\[\]{}]{8,200})",
          confidence=0.6, check=_generic),
)

"""Literal secrets in a deployment directory: ``portcullis lint`` and ``portcullis secrets scan`` find one
sample of every output-filter secret rule, in any file (``.github/`` included), at its line, under the
rule's id, and never print the value; ``secret://`` references and a fresh ``portcullis init`` are clean;
file names are shown escaped."""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from portcullis.cli.main import app
from portcullis.config.loader import lint_deployment
from portcullis.config.secret_scan import scan_directory
from portcullis.content.secret_rules import RULES

runner = CliRunner()
_RNG = random.Random(18)
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"


def _r(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def _jwt() -> str:
    def seg(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{seg({'alg': 'HS256', 'typ': 'JWT'})}.{seg({'sub': _r(ALNUM, 10), 'iat': 1700000000})}.{_r(B64URL, 43)}"


PEM_BODY = _r(ALNUM + "+/", 256)
# rule id -> (text before the value, the value, text after it): one line of a file
SAMPLES: dict[str, tuple[str, str, str]] = {
    "secret.aws.access_key_id": ("AccessKeyId: ", "AKIA" + _r(string.ascii_uppercase + "234567", 16), ""),
    "secret.aws.secret_access_key": ('aws_secret_access_key = "', _r(ALNUM + "+/", 40), '"'),
    "secret.gcp.api_key": ("maps key: ", "AIza" + _r(B64URL, 35), ""),
    "secret.gcp.service_account_key_id": ('{"private_key_id": "', _r(HEX, 40), '"}'),
    "secret.google.oauth_client_secret": ("client: ", "GOCSPX-" + _r(B64URL, 28), ""),
    "secret.google.oauth_access_token": ("bearer ", "ya29." + _r(B64URL, 40), ""),
    "secret.azure.storage_account_key": ("DefaultEndpointsProtocol=https;AccountKey=", _r(ALNUM + "+/", 86) + "==",
                                         ";EndpointSuffix=core.windows.net"),
    "secret.azure.shared_access_key": ("Endpoint=sb://x.servicebus.windows.net/;SharedAccessKey=",
                                       _r(ALNUM + "+/", 43) + "=", ""),
    "secret.azure.sas_signature": ("https://a.blob.core.windows.net/c?sv=2020-08-04&sig=", _r(ALNUM, 44) + "%3D",
                                   "&se=2030"),
    "secret.azure.ad_client_secret": ("client secret: ", _r(ALNUM, 3) + "7Q~" + _r(ALNUM + "_~.-", 34), ""),
    "secret.digitalocean.token": ("do: ", "dop_v1_" + _r(HEX, 64), ""),
    "secret.heroku.api_key_v2": ("heroku: ", "HRKU-" + _r(B64URL, 60), ""),
    "secret.heroku.api_key": ("HEROKU_API_KEY=", str(uuid.UUID(int=_RNG.getrandbits(128), version=4)), ""),
    "secret.github.token": ("token ", "ghp_" + _r(ALNUM, 36), ""),
    "secret.github.fine_grained_pat": ("pat ", "github_pat_" + _r(ALNUM, 22) + "_" + _r(ALNUM, 59), ""),
    "secret.gitlab.token": ("PRIVATE-TOKEN ", "glpat-" + _r(B64URL, 20), ""),
    "secret.gitlab.trigger_token": ("trigger ", "glptt-" + _r(HEX, 40), ""),
    "secret.gitlab.runner_registration": ("runner ", "GR1348941" + _r(B64URL, 30), ""),
    "secret.npm.token": ("//registry.npmjs.org/:_authToken=", "npm_" + _r(ALNUM, 36), ""),
    "secret.pypi.token": ("upload with ", "pypi-AgEIcHlwaS5vcmc" + _r(B64URL, 80), ""),
    "secret.atlassian.api_token": ("atlassian ", "ATATT3" + _r(B64URL, 190), ""),
    "secret.atlassian.legacy_token": ("jira_key = ", _r(ALNUM, 24), ""),
    "secret.linear.api_key": ("linear ", "lin_api_" + _r(ALNUM, 40), ""),
    "secret.doppler.token": ("doppler ", "dp.pt." + _r(ALNUM, 43), ""),
    "secret.vault.token": ("X-Vault-Token: ", "hvs." + _r(B64URL, 90), ""),
    "secret.vault.legacy_token": ("vault_token: ", "s." + _r(ALNUM, 24), ""),
    "secret.slack.token": ("slack ", f"xoxb-{_r(string.digits, 12)}-{_r(string.digits, 13)}-{_r(ALNUM, 24)}", ""),
    "secret.slack.app_token": ("slack app ", f"xapp-1-A{_r(string.ascii_uppercase + string.digits, 10)}-"
                               f"{_r(string.digits, 12)}-{_r(HEX, 64)}", ""),
    "secret.slack.webhook": ("post to ", f"https://hooks.slack.com/services/T{_r('ABCDEFGH0123', 8)}/"
                             f"B{_r('ABCDEFGH0123', 10)}/{_r(ALNUM, 24)}", " now"),
    "secret.discord.bot_token": ("discord bot: ", f"M{_r(ALNUM, 25)}.{_r(B64URL, 6)}.{_r(B64URL, 38)}", ""),
    "secret.discord.webhook": ("hook ", f"https://discord.com/api/webhooks/{_r(string.digits, 18)}/{_r(B64URL, 68)}",
                               ""),
    "secret.telegram.bot_token": ("https://api.telegram.org/bot", f"{_r('123456789', 10)}:AA{_r(B64URL, 33)}",
                                  "/getMe"),
    "secret.mailgun.api_key": ("api:", "key-" + _r(HEX, 32), ""),
    "secret.sendgrid.api_key": ("sendgrid ", f"SG.{_r(B64URL, 22)}.{_r(B64URL, 43)}", ""),
    "secret.twilio.api_key": ("twilio sid ", "SKa" + _r(HEX, 31), ""),
    "secret.twilio.auth_token": ("twilio_auth = ", _r(HEX, 32), ""),
    "secret.stripe.secret_key": ("stripe ", "sk_live_" + _r(ALNUM, 24), ""),
    "secret.stripe.publishable_key": ("stripe ", "pk_live_" + _r(ALNUM, 24), ""),
    "secret.stripe.webhook_secret": ("stripe ", "whsec_" + _r(ALNUM, 32), ""),
    "secret.shopify.token": ("X-Shopify-Access-Token: ", "shpat_" + _r(HEX, 32), ""),
    "secret.datadog.api_key": ("DD_API_KEY=", _r(HEX, 32), ""),
    "secret.openai.api_key": ("OPENAI ", f"sk-proj-{_r(B64URL, 40)}T3BlbkFJ{_r(B64URL, 40)}", ""),
    "secret.anthropic.api_key": ("x-api-key: ", f"sk-ant-api03-{_r(B64URL, 93)}AA", ""),
    "secret.huggingface.token": ("hf ", "hf_" + _r(ALNUM, 36), ""),
    "secret.jwt": ("Bearer ", _jwt(), ""),
    "secret.private_key.pem": ("key: ", "-----BEGIN PRIVATE KEY-----\\n" + PEM_BODY + "\\n-----END PRIVATE KEY-----",
                               ""),
    "secret.private_key.putty": ("", "PuTTY-User-Key-File-3: ssh-ed25519 Encryption: none Private-MAC: " + _r(HEX, 64),
                                 ""),
    "secret.connection_string.password": ("DATABASE_URL=postgres://app:", _r(ALNUM, 16), "@db.internal:5432/app"),
    "secret.url.basic_auth": ("clone https://deploy:", _r(ALNUM, 20), "@git.example.com/repo.git"),
    "secret.generic.assignment": ("db_password: ", _r(ALNUM, 12) + "!#" + _r(string.digits, 2), ""),
}
WHERE = ["policy/notes.md", ".github/workflows/deploy.yml", "README.md", ".github/CODEOWNERS"]


def _deployment(tmp_path: Path) -> Path:
    target = tmp_path / "d"
    assert runner.invoke(app, ["init", str(target)]).exit_code == 0
    return target


def test_every_secret_rule_has_a_sample() -> None:
    """A new output-filter rule needs a sample here, so lint is proven to find it too."""
    assert set(SAMPLES) == {rule.rule_id for rule in RULES}


@pytest.mark.parametrize("rule_id", sorted(SAMPLES))
def test_lint_and_secrets_scan_find_each_rule_at_its_line_without_the_value(tmp_path: Path, rule_id: str) -> None:
    """The sample on line 3 of a file (in .github/ for every other rule) is an error under the rule's id."""
    root = _deployment(tmp_path)
    where = WHERE[sorted(SAMPLES).index(rule_id) % len(WHERE)]
    before, value, after = SAMPLES[rule_id]
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# notes\n\n{before}{value}{after}\nend\n")
    for problems in (lint_deployment(root), scan_directory(root)):
        hits = [p for p in problems if p.rule == rule_id]
        assert [(p.path, p.line, p.severity) for p in hits] == [(path, 3, "error")], problems
        assert rule_id in hits[0].message
        assert all(value not in str(p) for p in problems)


def test_no_output_format_ever_shows_a_secret_value(tmp_path: Path) -> None:
    """All samples in one file: every format of both commands names rules, never values; exit 1."""
    root = _deployment(tmp_path)
    lines = [f"{before}{value}{after}" for before, value, after in SAMPLES.values()]
    (root / ".github").mkdir(exist_ok=True)
    (root / ".github" / "leaks.txt").write_text("\n\n".join(lines) + "\n")
    for command in ("lint", "secrets scan"):
        for fmt in ("table", "text", "json", "sarif"):
            result = runner.invoke(app, [*command.split(), str(root), "--format", fmt])
            assert result.exit_code == 1, result.output
            for _, value, _ in SAMPLES.values():
                assert value not in result.output, (command, fmt)
            assert "secret.github.token" in result.output


def test_secret_references_and_a_fresh_scaffold_are_clean(tmp_path: Path) -> None:
    """secret:// references under secret-named keys, in any file, are what should be there: no finding."""
    root = _deployment(tmp_path)
    assert scan_directory(root) == []
    (root / ".github").mkdir(exist_ok=True)
    (root / ".github" / "refs.yml").write_text(
        "key_ref: secret://env/PORTCULLIS_SESSION_KEYS\npassword: secret://file/run/secrets/db_password\n"
        "api_key: \"secret://env/UPSTREAM_API_KEY\"\nclient_secret: secret://env/CONSOLE_CLIENT_SECRET\n")
    assert scan_directory(root) == []
    assert [p for p in lint_deployment(root) if p.rule.startswith("secret")] == []
    result = runner.invoke(app, ["secrets", "scan", str(root)])
    assert result.exit_code == 0 and "0 error(s)" in result.output


def test_git_and_the_state_directory_are_not_scanned(tmp_path: Path) -> None:
    """.git/ holds history, the state directory the gateway's own keys: neither is configuration."""
    root = _deployment(tmp_path)
    _, value, _ = SAMPLES["secret.github.token"]
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text(f"token = {value}\n")
    state = root / "state"
    state.mkdir()
    (state / "key.txt").write_text(f"{value}\n")
    gateway = root / "gateway.yaml"
    gateway.write_text(gateway.read_text() + f"state_dir: {state}\n")
    assert [p for p in scan_directory(root) if p.rule.startswith("secret.")] == []


def test_a_file_name_with_terminal_escapes_is_shown_escaped(tmp_path: Path) -> None:
    """The finding's file name carries ESC, BEL and a bidi override: every format shows them escaped."""
    root = _deployment(tmp_path)
    _, value, _ = SAMPLES["secret.npm.token"]
    (root / ".github").mkdir(exist_ok=True)
    (root / ".github" / "x\x1b]0;pwned\x07\u202e[red]y.txt").write_text(f"npm {value}\n")
    for fmt in ("table", "text", "json", "sarif"):
        result = runner.invoke(app, ["secrets", "scan", str(root), "--format", fmt])
        assert result.exit_code == 1
        assert not {"\x1b", "\x07", "\u202e"} & set(result.output), fmt
        assert value not in result.output


def test_an_encoded_secret_is_found_as_the_output_filter_finds_it(tmp_path: Path) -> None:
    """The same decoding depth as the output filter: a base64-wrapped token is still a finding."""
    root = _deployment(tmp_path)
    _, value, _ = SAMPLES["secret.github.token"]
    wrapped = base64.b64encode(f"token={value}".encode()).decode()
    (root / "policy" / "blob.txt").write_text(f"a\nb\ndata: {wrapped}\n")
    hits = [p for p in scan_directory(root) if p.rule == "secret.github.token"]
    assert [(p.path.name, p.line) for p in hits] == [("blob.txt", 3)] and "base64" in hits[0].message
    assert value not in hits[0].message and wrapped not in hits[0].message


def test_a_file_too_large_to_scan_whole_fails_the_gate_but_not_the_load(tmp_path: Path) -> None:
    """Past MAX_BYTES the tail is unseen: an error for lint and secrets scan, never "clean"; loading for serve
    (and a policy push) only warns, so the file's own size checks give the reason."""
    from portcullis.config.loader import load_deployment
    from portcullis.config.yaml_lines import MAX_BYTES

    root = _deployment(tmp_path)
    _, value, _ = SAMPLES["secret.github.token"]
    (root / "policy" / "big.txt").write_text("x" * MAX_BYTES + f"\ntoken {value}\n")
    for problems in (lint_deployment(root), scan_directory(root)):
        assert [(p.path.name, p.severity) for p in problems if p.rule == "secret.unscanned"] == [("big.txt", "error")]
    load_deployment(root)

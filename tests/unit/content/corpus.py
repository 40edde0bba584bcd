"""A corpus generated per test run: true secrets and PII of every kind, and look-alikes.

True values are random but well-formed: the right prefixes, alphabets and lengths, and the
checksum where the kind has one (GitHub's CRC32, Luhn, IBAN mod 97). Look-alikes are the strings
a result is full of that must not be flagged: UUIDs, git SHAs, digests, base64 images, version
strings, timestamps, order numbers, and Luhn-valid numbers outside card issuer ranges.

Decision (documented in docs/decisions.md): a Luhn-valid number *inside* a card issuer range is a
card, whatever the context, and published test card numbers are reported (flagged
``test_value``): neither is a look-alike. A Luhn-valid number outside every issuer range is.

Nothing here is copied from another project; the value formats are public.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from portcullis.content.validators import base62, luhn_ok

UPPER, LOWER, DIGITS = string.ascii_uppercase, string.ascii_lowercase, string.digits
ALNUM = UPPER + LOWER + DIGITS
B64 = ALNUM + "+/"
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"


@dataclass(frozen=True)
class Sample:
    """``snippet`` holds the sensitive ``value`` at ``snippet[start:end]``; a detector must report ``kind``."""

    kind: str
    snippet: str
    start: int
    end: int

    @property
    def value(self) -> str:
        return self.snippet[self.start:self.end]


def _s(kind: str, before: str, value: str, after: str = "") -> Sample:
    return Sample(kind, before + value + after, len(before), len(before) + len(value))


class Corpus:
    """Generators for one seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def chars(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    # ------------------------------------------------------------------ secrets
    def aws_access_key_id(self) -> Sample:
        prefix = self.rng.choice(["AKIA", "ASIA"])
        return _s("aws_access_key_id", "AccessKeyId: ", prefix + self.chars(UPPER + "234567", 16), "\n")

    def aws_secret_access_key(self) -> Sample:
        name = self.rng.choice(["aws_secret_access_key = ", 'AWS_SECRET_ACCESS_KEY="', '"SecretAccessKey": "'])
        return _s("aws_secret_access_key", name, self.chars(B64, 40), '"')

    def gcp_api_key(self) -> Sample:
        return _s("gcp_api_key", "https://maps.example/api?key=", "AIza" + self.chars(B64URL, 35), "&z=3")

    def gcp_service_account_key(self) -> Sample:
        return _s("gcp_service_account_key", '{"type": "service_account", "private_key_id": "', self.chars(HEX, 40),
                  '", "client_email": "x@p.iam.gserviceaccount.com"}')

    def google_oauth_client_secret(self) -> Sample:
        return _s("google_oauth_client_secret", '"client_secret":"', "GOCSPX-" + self.chars(B64URL, 28), '"')

    def azure_storage_key(self) -> Sample:
        return _s("azure_storage_key", "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=",
                  self.chars(B64, 86) + "==", ";EndpointSuffix=core.windows.net")

    def azure_ad_client_secret(self) -> Sample:
        value = self.chars(ALNUM, 3) + self.chars(DIGITS, 1) + "Q~" + self.chars(ALNUM + "_~.-", 34)
        return _s("azure_ad_client_secret", "client secret: ", value, "\n")

    def github_token(self) -> Sample:
        if self.rng.random() < 0.3:
            value = "github_pat_" + self.chars(ALNUM, 22) + "_" + self.chars(ALNUM, 59)
        else:
            body = self.chars(ALNUM, 30)
            value = self.rng.choice(["ghp", "gho", "ghu", "ghs"]) + "_" + body + base62(zlib.crc32(body.encode()), 6)
        return _s("github_token", "Authorization: token ", value, "\r\n")

    def gitlab_token(self) -> Sample:
        return _s("gitlab_token", "PRIVATE-TOKEN: ", "glpat-" + self.chars(B64URL, 20), "\n")

    def slack_token(self) -> Sample:
        value = f"xoxb-{self.chars(DIGITS, 12)}-{self.chars(DIGITS, 13)}-{self.chars(ALNUM, 24)}"
        return _s("slack_token", "SLACK_BOT_TOKEN=", value, "\n")

    def slack_webhook(self) -> Sample:
        team, bot = self.chars(UPPER + DIGITS, 8), self.chars(UPPER + DIGITS, 10)
        value = f"https://hooks.slack.com/services/T{team}/B{bot}/{self.chars(ALNUM, 24)}"
        return _s("slack_webhook", "post to ", value, " now")

    def stripe_key(self) -> Sample:
        value = self.rng.choice(["sk_live_", "rk_live_"]) + self.chars(ALNUM, self.rng.choice([24, 99]))
        return _s("stripe_key", "stripe.api_key = '", value, "'")

    def twilio_api_key(self) -> Sample:
        return _s("twilio_api_key", "TWILIO_API_KEY=", "SK" + self.chars(HEX, 32), "\n")

    def sendgrid_api_key(self) -> Sample:
        return _s("sendgrid_api_key", "SENDGRID_API_KEY=", f"SG.{self.chars(B64URL, 22)}.{self.chars(B64URL, 43)}",
                  "\n")

    def openai_api_key(self) -> Sample:
        value = f"sk-proj-{self.chars(B64URL, 40)}T3BlbkFJ{self.chars(B64URL, 40)}"
        return _s("openai_api_key", "OPENAI_API_KEY=", value, "\n")

    def anthropic_api_key(self) -> Sample:
        return _s("anthropic_api_key", "x-api-key: ", f"sk-ant-api03-{self.chars(B64URL, 93)}AA", "\n")

    def npm_token(self) -> Sample:
        return _s("npm_token", "//registry.npmjs.org/:_authToken=", "npm_" + self.chars(ALNUM, 36), "\n")

    def pypi_token(self) -> Sample:
        return _s("pypi_token", "password = ", "pypi-AgEIcHlwaS5vcmc" + self.chars(B64URL, 120), "\n")

    def jwt(self) -> Sample:
        def seg(obj: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        header = seg({"alg": self.rng.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"})
        payload = seg({"sub": self.chars(ALNUM, 10), "iat": self.rng.randrange(10**9, 2 * 10**9)})
        return _s("jwt", "Bearer ", f"{header}.{payload}.{self.chars(B64URL, 43)}", "\n")

    def private_key(self) -> Sample:
        label = self.rng.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
        body = self.chars(B64, self.rng.choice([256, 1600]))
        newline = self.rng.choice(["\n", "\\n"])  # real line breaks, or a JSON-escaped key in a text dump
        lines = newline.join(body[i:i + 64] for i in range(0, len(body), 64))
        value = f"-----BEGIN {label}-----{newline}{lines}{newline}-----END {label}-----"
        return _s("private_key", "key file:\n", value, "\n")

    def connection_string_password(self) -> Sample:
        scheme, user = self.rng.choice([("postgres", "app"), ("postgresql", "svc"), ("mongodb+srv", "admin"),
                                        ("redis", ""), ("amqp", "guest"), ("mysql", "root")])
        password = self.chars(ALNUM + "!*-._~", 16)
        return _s("connection_string_password", f"DATABASE_URL={scheme}://{user}:", password,
                  f"@db{self.rng.randrange(9)}.internal:5432/app")

    def url_basic_auth(self) -> Sample:
        return _s("url_basic_auth", "clone https://deploy:", self.chars(ALNUM, 20), "@git.example.com/repo.git")

    def generic_secret(self) -> Sample:
        name = self.rng.choice(["DB_PASSWORD=", "api_key: ", '"client_secret": "', "password = '"])
        return _s("generic_secret", name, self.chars(ALNUM, 12) + self.chars("!#%&*", 2) + self.chars(DIGITS, 2),
                  "'")

    def datadog_api_key(self) -> Sample:
        return _s("datadog_api_key", "DD_API_KEY=", self.chars(HEX, 32), "\n")

    def heroku_api_key(self) -> Sample:
        if self.rng.random() < 0.5:
            return _s("heroku_api_key", "HEROKU_API_KEY=", str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))
        return _s("heroku_api_key", "token ", "HRKU-AA" + self.chars(B64URL, 58), "\n")

    def shopify_token(self) -> Sample:
        return _s("shopify_token", "X-Shopify-Access-Token: ", "shpat_" + self.chars(HEX, 32), "\n")

    def telegram_bot_token(self) -> Sample:
        value = f"{self.rng.randrange(10**8, 10**10)}:AA{self.chars(B64URL, 33)}"
        return _s("telegram_bot_token", "https://api.telegram.org/bot", value, "/getMe")

    def discord_token(self) -> Sample:
        value = f"{self.rng.choice('MNO')}{self.chars(ALNUM, 25)}.{self.chars(B64URL, 6)}.{self.chars(B64URL, 38)}"
        return _s("discord_token", "Authorization: Bot ", value, "\n")

    def mailgun_api_key(self) -> Sample:
        return _s("mailgun_api_key", "api:", "key-" + self.chars(HEX, 32), "\n")

    def digitalocean_token(self) -> Sample:
        return _s("digitalocean_token", "DIGITALOCEAN_TOKEN=", "dop_v1_" + self.chars(HEX, 64), "\n")

    def vault_token(self) -> Sample:
        return _s("vault_token", "X-Vault-Token: ", "hvs." + self.chars(B64URL, 90), "\n")

    def doppler_token(self) -> Sample:
        return _s("doppler_token", "DOPPLER_TOKEN=", "dp.pt." + self.chars(ALNUM, 43), "\n")

    def linear_api_key(self) -> Sample:
        return _s("linear_api_key", "Authorization: ", "lin_api_" + self.chars(ALNUM, 40), "\n")

    def atlassian_token(self) -> Sample:
        return _s("atlassian_token", "JIRA_TOKEN=", "ATATT3" + self.chars(B64URL, 178) + "=" + self.chars(HEX, 8)
                  .upper(), "\n")

    # ------------------------------------------------------------------ PII
    def card_number(self) -> Sample:
        prefix, length = self.rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                                          ("6011", 16), ("65", 16), ("3530", 16), ("62", 16), ("4", 19)])
        digits = prefix + self.chars(DIGITS, length - len(prefix) - 1)
        digits += next(d for d in DIGITS if luhn_ok(digits + d))
        sep = self.rng.choice(["", " ", "-"])
        if sep and length == 15:
            shown = sep.join([digits[:4], digits[4:10], digits[10:]])
        elif sep:
            shown = sep.join(digits[i:i + 4] for i in range(0, length, 4))
        else:
            shown = digits
        return _s("card_number", "card: ", shown, ", exp 12/29")

    def us_ssn(self) -> Sample:
        area = self.rng.choice([n for n in range(1, 900) if n != 666])
        value = f"{area:03d}-{self.rng.randrange(1, 100):02d}-{self.rng.randrange(1, 10000):04d}"
        return _s("us_ssn", "SSN ", value, ".")

    def email(self) -> Sample:
        local = self.chars(LOWER, 6) + self.rng.choice(["", ".", "_", "+"]) + self.chars(LOWER + DIGITS, 4)
        domain = self.chars(LOWER, 8) + self.rng.choice([".com", ".co.uk", ".io", ".example.org"])
        return _s("email", "contact: ", f"{local}@{domain}", ";")

    def phone_number(self) -> Sample:
        number = self.rng.choice([
            lambda: f"+1 {self.rng.choice([212, 415, 650, 312, 617, 206])} {self.rng.randrange(200, 1000)} "
                    f"{self.rng.randrange(1000, 10000)}",
            lambda: f"({self.rng.choice([212, 303, 512])}) {self.rng.randrange(200, 1000)}-"
                    f"{self.rng.randrange(1000, 10000)}",
            lambda: f"+44 20 7946 {self.rng.randrange(1000, 10000)}",
            lambda: f"+49 30 {self.rng.randrange(10**7, 10**8)}",
        ])()
        return _s("phone_number", "call ", number, " today")

    def iban(self) -> Sample:
        country, bban = self.rng.choice([("DE", lambda: self.chars(DIGITS, 18)),
                                         ("GB", lambda: self.chars(UPPER, 4) + self.chars(DIGITS, 14)),
                                         ("FR", lambda: self.chars(DIGITS, 23)),
                                         ("NL", lambda: self.chars(UPPER, 4) + self.chars(DIGITS, 10))])
        body = bban()
        numeric = "".join(str(int(c, 36)) for c in body + country + "00")
        compact = f"{country}{98 - int(numeric) % 97:02d}{body}"
        shown = " ".join(compact[i:i + 4] for i in range(0, len(compact), 4)) if self.rng.random() < 0.5 else compact
        return _s("iban", "IBAN: ", shown, "\n")

    # ------------------------------------------------------------------ look-alikes
    def look_alikes(self) -> dict[str, Callable[[], str]]:
        rng = self.rng
        return {
            "uuid": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "git_sha": lambda: f"commit {self.chars(HEX, 40)}",
            "short_sha": lambda: f"fixed in {self.chars(HEX, 7)}",
            "sha256": lambda: f"sha256:{self.chars(HEX, 64)}",
            "sha512_b64": lambda: "sha512-" + base64.b64encode(rng.randbytes(64)).decode(),
            "png_base64": lambda: "data:image/png;base64," + base64.b64encode(
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.randbytes(600)).decode(),
            "binary_base64": lambda: base64.b64encode(rng.randbytes(rng.randrange(16, 400))).decode(),
            "version": lambda: f"v{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(100)}-rc.{rng.randrange(9)}",
            "iso_timestamp": lambda: f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                                     f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            "unix_ms": lambda: str(rng.randrange(1_600_000_000_000, 1_900_000_000_000)),
            "order_number": lambda: f"Order #{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}-"
                                    f"{rng.randrange(1000, 9999)}",
            "order_id": lambda: f"ORD-2026-{rng.randrange(10**6, 10**7)}",
            "luhn_non_card": lambda: self._luhn_non_card(),
            "ipv4": lambda: ".".join(str(rng.randrange(256)) for _ in range(4)),
            "price": lambda: f"total {rng.randrange(10**6)}.{rng.randrange(100):02d} USD",
            "url_with_port": lambda: f"https://api.example.com:{rng.randrange(1024, 65535)}/v1/items?page=2",
            "schema_words": lambda: rng.choice(['"password": "string"', "token_type: Bearer", "secret: required",
                                                "api_key: ${API_KEY}", "password=********", "token: <your-token>"]),
            "hex_color": lambda: f"color: #{self.chars(HEX, 6)}",
            "file_path": lambda: f"/usr/lib/python3.11/site-packages/{self.chars(LOWER, 10)}/{self.chars(LOWER, 8)}.py",
            "prose": lambda: " ".join(rng.choice(["the", "token", "secret", "key", "password", "was", "rotated",
                                                   "by", "ops", "yesterday", "and", "AKIA", "sk", "ghp"])
                                      for _ in range(12)),
        }

    def _luhn_non_card(self) -> str:
        digits = self.rng.choice(["0", "1", "7"]) + self.chars(DIGITS, 14)
        return "ref " + digits + next(d for d in DIGITS if luhn_ok(digits + d))


TRUE_KINDS: tuple[str, ...] = (
    "aws_access_key_id", "aws_secret_access_key", "gcp_api_key", "gcp_service_account_key",
    "google_oauth_client_secret", "azure_storage_key", "azure_ad_client_secret", "github_token", "gitlab_token",
    "slack_token", "slack_webhook", "stripe_key", "twilio_api_key", "sendgrid_api_key", "openai_api_key",
    "anthropic_api_key", "npm_token", "pypi_token", "jwt", "private_key", "connection_string_password",
    "url_basic_auth", "generic_secret", "datadog_api_key", "heroku_api_key", "shopify_token", "telegram_bot_token",
    "discord_token", "mailgun_api_key", "digitalocean_token", "vault_token", "doppler_token", "linear_api_key",
    "atlassian_token", "card_number", "us_ssn", "email", "phone_number", "iban",
)


def samples(corpus: Corpus, per_kind: int) -> list[Sample]:
    return [getattr(corpus, kind)() for kind in TRUE_KINDS for _ in range(per_kind)]

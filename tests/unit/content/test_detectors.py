"""Behaviour of the detectors on hand-written cases: whole blocks, checksums, validators, offsets,
chunk edges, parts, leaves, the detector set and the Presidio adapter (with a fake analyzer)."""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass

import pytest

from portcullis.content import DetectorSet, PresidioDetector, ScanBudget, scan_parts, scan_text, string_leaves
from portcullis.content.presidio import PresidioUnavailable, load_analyzer
from portcullis.content.scan import CHUNK_CHARS
from portcullis.content.validators import base62

RSA_BODY = "MIIEowIBAAKCAQEA" + "q7BsW9Zk3XvR1yT0pLmN8aGfHjKc2dEe4FiQuS6oP5rV/Ww+Y=" * 8


def _kinds(text: str) -> set[str]:
    return {f.kind for f in scan_text(text).findings}


def _ghp(body: str) -> str:
    return "ghp_" + body + base62(zlib.crc32(body.encode()), 6)


def test_a_private_key_block_is_reported_whole_body_included() -> None:
    """The finding spans BEGIN line, body and END line, not only the header."""
    block = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(RSA_BODY[i:i + 64] for i in range(0, len(RSA_BODY), 64)) \
        + "\n-----END RSA PRIVATE KEY-----"
    text = f"here it is:\n{block}\nbye"
    [finding] = [f for f in scan_text(text).findings if f.kind == "private_key"]
    assert text[finding.start:finding.end] == block


def test_a_private_key_inside_a_json_string_with_escaped_newlines_is_reported_whole() -> None:
    """A service-account file dumped as text keeps its key with literal \\n: the block is still whole."""
    key = "-----BEGIN PRIVATE KEY-----\\n" + RSA_BODY + "\\n-----END PRIVATE KEY-----\\n"
    text = '{"type": "service_account", "private_key": "' + key + '"}'
    [finding] = [f for f in scan_text(text).findings if f.kind == "private_key"]
    assert text[finding.start:finding.end] == key.removesuffix("\\n")


def test_a_private_key_without_its_end_line_is_reported_as_partial() -> None:
    """A truncated block (a paginated result) is still a key: reported with the ``partial`` flag."""
    text = "-----BEGIN OPENSSH PRIVATE KEY-----\n" + RSA_BODY[:200]
    [finding] = [f for f in scan_text(text).findings if f.kind == "private_key"]
    assert "partial" in finding.flags and finding.end == len(text)


def test_a_github_token_with_a_valid_crc32_is_flagged_checksum_ok() -> None:
    """The CRC32 is verified; a token whose checksum fails is still reported (it may be a new format)."""
    good = _ghp("b1C2d3E4f5G6h7J8k9L0m1N2p3Q4r5")
    [finding] = [f for f in scan_text(f"token {good}").findings if f.kind == "github_token"]
    assert "checksum_ok" in finding.flags
    bad = good[:-1] + ("x" if good[-1] != "x" else "y")
    [finding] = [f for f in scan_text(f"token {bad}").findings if f.kind == "github_token"]
    assert "checksum_ok" not in finding.flags


def test_a_jwt_needs_a_json_header() -> None:
    """Three base64url segments whose first is not a JSON object with alg/typ are not a JWT."""
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).decode().rstrip("=")
    payload = base64.urlsafe_b64encode(b'{"sub":"1"}').decode().rstrip("=")
    assert "jwt" in _kinds(f"{header}.{payload}.c2lnbmF0dXJlc2lnbmF0dXJl")
    not_json = base64.urlsafe_b64encode(b'{"x" 1, broken').decode().rstrip("=")
    assert "jwt" not in _kinds(f"{not_json}.{payload}.c2lnbmF0dXJl")


@pytest.mark.parametrize("text", [
    "password: ********", "api_key: ${API_KEY}", "token: <your-token>", '"password": "string"',
    "secret: required", "password=changeme", "token_type: Bearer", "DATABASE_URL=postgres://app:${DB_PASS}@db/x",
])
def test_placeholders_and_schema_words_are_not_secrets(text: str) -> None:
    """Template references, masks and type names assigned to a credential name are not reported."""
    assert not scan_text(text).findings


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("redis://:s3cretPassw0rd@cache:6379/0", "connection_string_password", "s3cretPassw0rd"),
    ("mongodb+srv://admin:Pa55w0rd-x@cluster0.mongodb.net/db", "connection_string_password", "Pa55w0rd-x"),
    ("amqp://guest:g7Hk2pQz@rabbit:5672/", "connection_string_password", "g7Hk2pQz"),
    ("mysql://root:r00tPwd!@127.0.0.1:3306/app", "connection_string_password", "r00tPwd!"),
    ("https://deploy:glXk29sQpw@git.example.com/r.git", "url_basic_auth", "glXk29sQpw"),
])
def test_only_the_password_of_a_url_is_the_secret(text: str, kind: str, value: str) -> None:
    """The span is the password, so a redaction keeps scheme, user and host readable."""
    [finding] = [f for f in scan_text(text).findings if f.kind == kind]
    assert text[finding.start:finding.end] == value


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000"])
def test_never_issued_ssns_are_not_reported(ssn: str) -> None:
    assert "us_ssn" not in _kinds(f"ssn {ssn}")


def test_cards_need_luhn_an_issuer_range_and_a_printed_layout() -> None:
    """Luhn-valid outside issuer ranges, Luhn-invalid, and oddly grouped digits are not cards."""
    assert "card_number" in _kinds("4539 1488 0343 6467")
    assert "card_number" not in _kinds("4539 1488 0343 6468")  # Luhn fails
    assert "card_number" not in _kinds("1234 5678 9012 3452")  # Luhn-valid, no issuer starts with 1
    assert "card_number" not in _kinds("4539-1488 0343-6467")  # two different separators
    assert "card_number" not in _kinds("v4539148803436467.2")  # inside a token


def test_iban_is_validated_and_trailing_words_do_not_spoil_it() -> None:
    assert "iban" in _kinds("pay to GB82 WEST 1234 5698 7654 32 by Friday")
    assert "iban" not in _kinds("pay to GB83 WEST 1234 5698 7654 32")  # mod 97 fails


@pytest.mark.parametrize(("text", "is_phone"), [
    ("call (415) 555-2671", True), ("+44 20 7946 0958", True), ("+1-202-555-0143", True),
    ("order 170-3276-4252", False), ("2026-12-05", False), ("10.20.30.40", False), ("4155552671", False),
    ("card 4556 7375 8689 9855", False),  # a card written in fours is not a phone (nor two)
])
def test_phone_numbers_must_be_valid_and_written_like_phone_numbers(text: str, is_phone: bool) -> None:
    """Validity by ``phonenumbers``; bare digit runs, dates, addresses and odd groupings are not phones."""
    assert ("phone_number" in _kinds(text)) is is_phone


def test_offsets_are_code_points_after_non_ascii_text() -> None:
    """Emoji ZWJ sequences, CJK, RTL and combining marks before a value do not shift its span."""
    lead = "漢字 مرحبا 👩‍👩‍👧‍👦 é\u0301 "
    token = "npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    text = lead + token + " 🏳️‍🌈"
    [finding] = scan_text(text).findings
    assert text[finding.start:finding.end] == token


def test_a_lone_surrogate_does_not_break_the_scan() -> None:
    text = "x\ud800y contact me@example.com"
    [finding] = scan_text(text).findings
    assert text[finding.start:finding.end] == "me@example.com"


def test_a_value_across_a_chunk_edge_is_found_once() -> None:
    """Chunks overlap: a value that starts before a chunk edge and ends after it is reported once."""
    token = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc" * 2
    text = "x" * (CHUNK_CHARS - 10) + " " + token + " tail"
    found = [f for f in scan_text(text).findings if f.kind == "stripe_key"]
    assert len(found) == 1 and text[found[0].start:found[0].end] == token


def test_decoded_findings_map_onto_the_encoded_characters() -> None:
    """A secret inside base64 is reported over the base64 characters that hold it, encoding named."""
    token = "glpat-" + "Zx8Kq2Lm9Np4Rs7Tv1Wy"
    encoded = base64.b64encode(f"config: {token}\n".encode()).decode()
    text = f"blob={encoded}"
    [finding] = [f for f in scan_text(text).findings if f.kind == "gitlab_token"]
    assert finding.encoding == "base64"
    decoded = base64.b64decode(text[finding.start:finding.end] + "==="[:(-(finding.end - finding.start)) % 4])
    assert token.encode() in decoded


@pytest.mark.parametrize("text", ["call 4155552671 6505551234 now", "call 4155552671.6505551234 now"])
def test_two_phone_numbers_run_together_are_both_reported(text: str) -> None:
    """A candidate of two national numbers (20 digits) is split by the library's matcher."""
    spans = sorted(text[f.start:f.end] for f in scan_text(text).findings if f.kind == "phone_number")
    assert spans == ["4155552671", "6505551234"]


@pytest.mark.parametrize("hexed", [
    "-".join((b"ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8".hex()[i:i + 8]) for i in range(0, 80, 8)),
    "-".join((b"AKIAZ5GMHYJKLMNOPQR7".hex()[i:i + 4]) for i in range(0, 40, 4)),
])
def test_hex_in_dashed_groups_is_decoded_and_reported_over_the_whole_run(hexed: str) -> None:
    """A UUID-like grouping of hex digits is read as hex; the finding covers every encoded character."""
    text = f"id {hexed} end"
    [finding] = [f for f in scan_text(text).findings if f.encoding == "hex"]
    assert text[finding.start:finding.end] == hexed


def test_uuids_digests_and_dashed_ids_are_not_findings() -> None:
    text = ("3f2a9c1e-7b4d-4e2a-9f1c-2b3d4e5f6a7b 9f1c2b3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b ORD-2026-0042 "
            "sha256:" + "ab" * 32)
    assert scan_text(text).findings == ()


def test_scan_parts_maps_findings_to_every_part_they_touch() -> None:
    """A token split in three stream chunks has a span in each; single-part findings have one span."""
    token = "xoxb-123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
    parts = ["mail a@example.org then " + token[:10], token[10:20], token[20:] + " done"]
    result = scan_parts(parts)
    by_kind = {p.finding.kind: p for p in result.findings}
    assert [s.part for s in by_kind["slack_token"].spans] == [0, 1, 2]
    assert "".join(parts[s.part][s.start:s.end] for s in by_kind["slack_token"].spans) == token
    assert [(s.part, s.start, s.end) for s in by_kind["email"].spans] == [(0, 5, 18)]


def test_an_encoded_value_split_across_parts_is_decoded_only_where_it_crosses() -> None:
    """Across a boundary only runs holding the boundary are decoded; one wholly inside a part is the
    per-part scan's (found once, not twice)."""
    secret = base64.b64encode(b"key AKIAZ5GMHYJKLMNOPQR7 end").decode()
    inside = base64.b64encode(b"mail jane.canary@corp-mail.net ok").decode()
    parts = [f"a {inside} b {secret[:13]}", secret[13:] + " c"]
    kinds = {(p.finding.kind, len(p.spans)) for p in scan_parts(parts).findings}
    assert ("aws_access_key_id", 2) in kinds and ("email", 1) in kinds
    assert [p.finding.kind for p in scan_parts(parts).findings].count("email") == 1


def test_string_leaves_walks_keys_and_values_in_document_order() -> None:
    """Keys are leaves too (a key can carry a secret); numbers and nulls are not strings."""
    result = {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
              "structuredContent": {"k": [1, None, "c"]}, "_meta": {"x": "d"}}
    leaves = [(leaf.path, leaf.text, leaf.is_key) for leaf in string_leaves(result)]
    assert [text for _, text, is_key in leaves if not is_key] == ["text", "a", "text", "b", "c", "d"]
    assert (("structuredContent", "k", 2), "c", False) in leaves
    assert (("_meta", "x"), "x", True) in leaves


def test_detector_set_build_chooses_and_refuses() -> None:
    """Unknown PII kinds and an empty set are configuration errors, not a clean scan."""
    only_email = DetectorSet.build(secrets=False, pii=("email",))
    assert {f.kind for f in only_email.scan("me@example.com AKIAIOSFODNN7EXAMPLE").findings} == {"email"}
    with pytest.raises(ValueError, match="unknown PII kinds"):
        DetectorSet.build(pii=("passport",))
    with pytest.raises(ValueError, match="at least one detector"):
        DetectorSet.build(secrets=False, pii=())


@dataclass
class FakeResult:
    entity_type: str
    start: int
    end: int
    score: float


class FakeAnalyzer:
    """Stands in for Presidio's AnalyzerEngine (no spaCy model is installed here): it 'recognises' the
    capitalised words of a fixed list, with the same result shape as Presidio."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls: list[tuple[str, str, list[str] | None]] = []

    def analyze(self, text: str, language: str, entities: list[str] | None = None) -> list[FakeResult]:
        self.calls.append((text, language, entities))
        found = []
        for name in self.names:
            at = text.find(name)
            if at >= 0:
                found.append(FakeResult("PERSON", at, at + len(name), 0.85))
        found.append(FakeResult("LOCATION", 0, 1, 0.1))  # below min_score: dropped
        return found


def test_presidio_findings_come_through_the_adapter_in_pieces() -> None:
    """The adapter passes language and entities, keeps results above min_score, offsets per piece."""
    analyzer = FakeAnalyzer(["Ada Lovelace"])
    detector = PresidioDetector(analyzer, max_chars=40)
    detectors = DetectorSet((detector,), decode=False)
    text = "x" * 50 + " met Ada Lovelace in London"
    result = detectors.scan(text)
    assert [(f.kind, text[f.start:f.end]) for f in result.findings] == [("person", "Ada Lovelace")]
    assert len(analyzer.calls) == 2 and analyzer.calls[0][1:] == ("en", ["PERSON", "LOCATION", "ADDRESS", "NRP"])


def test_presidio_is_imported_only_when_asked_for_and_missing_is_a_clear_error() -> None:
    """Without the extra, building from a model path raises PresidioUnavailable naming the extra."""
    try:
        import presidio_analyzer  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(PresidioUnavailable, match=r"portcullis\[presidio\]"):
            load_analyzer("/models/en_core_web_sm")
    else:  # pragma: no cover - the extra is installed: a missing model is the clear error instead
        with pytest.raises(PresidioUnavailable, match="spaCy model"):
            load_analyzer("/nonexistent/model")


def test_budget_of_a_scan_is_fresh_each_call() -> None:
    """A ScanBudget is a value: the same budget object serves many scans."""
    budget = ScanBudget(cpu_ms=1000)
    assert scan_text("me@example.com", budget).findings and scan_text("me@example.com", budget).findings


def test_decoding_follows_two_levels_and_stops_at_the_depth_limit() -> None:
    """base64 inside base64 is found (``base64>base64``); a third level is past ``decode_depth`` = 2."""
    secret = b"key " + b"npm_" + b"a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    twice = base64.b64encode(base64.b64encode(secret)).decode()
    assert [f.encoding for f in scan_text(twice).findings] == ["base64>base64"]
    thrice = base64.b64encode(twice.encode()).decode()
    assert not scan_text(thrice).findings
    assert [f.encoding for f in scan_text(thrice, ScanBudget(decode_depth=3)).findings] == ["base64>base64>base64"]


@pytest.mark.parametrize("text", ['api_key = "secret://Zx9kQ2mP7vR4tL8wQ3nB"',
                                  "password: secret://q7BsW9Zk3XvR1yT0pLmN8aGf",
                                  'token="secret://env/Zx9kQ2mP7vR4tL8wQ3nBq7Bs"'])
def test_a_secret_prefixed_with_secret_scheme_is_still_a_secret_in_output(text: str) -> None:
    """The output filter does not take ``secret://`` as proof of a reference: an upstream that prefixes a
    real value would slip it through (only lint, reading configuration, skips references)."""
    assert "generic_secret" in _kinds(text)

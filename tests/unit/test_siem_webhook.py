"""Webhook export: signed JSON batches to a real HTTPS receiver; 4xx is permanent, 5xx and timeouts retry."""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import orjson
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSListener

from portcullis.audit.record import GENESIS_HASH, make_record
from portcullis.audit.siem import ExportFailed, ExportQueue, WebhookExporter, signature_header, verify_signature
from tests.pki import Pki, make_pki

KEY = b"k" * 32
NOW = 1_800_000_000
TOKEN_IN_PATH = "T0KEN-in-the-path"


def make_records(n: int) -> list[dict[str, Any]]:
    out, prev = [], GENESIS_HASH
    for i in range(n):
        record = make_record(i, NOW + i, f"req-{i}", "decision", {"decision": {"effect": "deny"}}, prev)
        out.append(record.to_json())
        prev = record.hash
    return out


def clock() -> float:
    return float(NOW)


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class HookReceiver:
    """A minimal real HTTP/1.1 server (keep-alive, Content-Length bodies) that answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.answers: list[int | str] = []  # status codes, or "hang" to never answer; then 200s

    async def handle(self, stream: ByteStream) -> None:
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            while True:
                try:
                    head = await reader.receive_until(b"\r\n\r\n", 65_536)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, ssl.SSLError, OSError):
                    return
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ")
                headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
                body = await reader.receive_exactly(int(headers.get("content-length", "0")))
                self.requests.append(Request(method, target, headers, body))
                answer = self.answers.pop(0) if self.answers else 200
                if answer == "hang":
                    await anyio.sleep_forever()
                await stream.send(f"HTTP/1.1 {answer} Whatever\r\ncontent-length: 2\r\n\r\nok".encode())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@asynccontextmanager
async def receiver(pki: Pki | None) -> AsyncIterator[tuple[HookReceiver, str]]:
    """An HTTPS receiver with the test CA's loopback certificate (plain HTTP when ``pki`` is None)."""
    hook = HookReceiver()
    listener: Any = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    scheme = "http"
    if pki is not None:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        assert pki.server.cert_file and pki.server.key_file
        ctx.load_cert_chain(pki.server.cert_file, pki.server.key_file)
        listener, scheme = TLSListener(listener, ctx, standard_compatible=False), "https"
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hook.handle)
        yield hook, f"{scheme}://127.0.0.1:{port}/hook/{TOKEN_IN_PATH}"
        tg.cancel_scope.cancel()


def exporter_for(url: str, pki: Pki, **kwargs: Any) -> WebhookExporter:
    return WebhookExporter(url, KEY, ssl_context=ssl.create_default_context(cafile=str(pki.ca_file)), clock=clock,
                           **kwargs)


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.lowlevel.checkpoint()


# --------------------------------------------------------------------------- delivery


async def test_a_batch_is_one_signed_post_of_a_json_array(pki: Pki) -> None:
    """The receiver gets the records as a JSON array, a signature it can verify, and a body-derived batch id."""
    async with receiver(pki) as (hook, url):
        exporter = exporter_for(url, pki, authorization="Bearer siem-token")
        records = make_records(3)
        assert await exporter.send(records) == 0
        await exporter.aclose()
    [request] = hook.requests
    assert request.method == "POST" and request.target == f"/hook/{TOKEN_IN_PATH}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer siem-token"
    assert orjson.loads(request.body) == records
    assert verify_signature(KEY, request.headers["x-portcullis-signature"], request.body, now=NOW + 10)
    assert request.headers["x-portcullis-signature"].startswith(f"t={NOW},v1=")
    assert request.headers["x-portcullis-batch-id"] == hashlib.sha256(request.body).hexdigest()[:32]


async def test_a_retried_batch_keeps_its_id_and_is_signed_again(pki: Pki) -> None:
    """After a 503 the queue resends the same body with the same batch id, so receivers can de-duplicate."""
    async with receiver(pki) as (hook, url):
        hook.answers = [503, 200]
        sleep = FakeSleep()
        async with ExportQueue([exporter_for(url, pki)], sleep=sleep) as queue:
            for record in make_records(2):
                queue.offer(record)
    first, second = hook.requests
    assert first.body == second.body
    assert first.headers["x-portcullis-batch-id"] == second.headers["x-portcullis-batch-id"]
    assert all(verify_signature(KEY, r.headers["x-portcullis-signature"], r.body, now=NOW) for r in hook.requests)
    assert len(sleep.delays) == 1
    stats = queue.stats()["webhook"]
    assert (stats.sent, stats.dropped, stats.failed_attempts) == (2, 0, 1)


@pytest.mark.parametrize(("status", "permanent"), [
    (400, True), (401, True), (403, True), (404, True), (413, True), (302, True),
    (408, False), (429, False), (500, False), (502, False), (503, False),
])
async def test_client_errors_are_permanent_and_server_errors_are_retried(pki: Pki, status: int,
                                                                         permanent: bool) -> None:
    """4xx (and unfollowed redirects) cannot succeed on retry; 408, 429 and 5xx can."""
    async with receiver(pki) as (hook, url):
        hook.answers = [status]
        exporter = exporter_for(url, pki)
        with pytest.raises(ExportFailed) as caught:
            await exporter.send(make_records(1))
        await exporter.aclose()
    assert caught.value.permanent is permanent
    assert f"HTTP {status}" in caught.value.detail


async def test_a_permanent_failure_is_dropped_and_counted_by_the_queue(pki: Pki) -> None:
    """A 400 is tried once; its records count as dropped; the next batch is sent normally."""
    async with receiver(pki) as (hook, url):
        hook.answers = [400]
        async with ExportQueue([exporter_for(url, pki)], max_batch=2, sleep=FakeSleep()) as queue:
            for record in make_records(4):
                queue.offer(record)
    assert len(hook.requests) == 2
    stats = queue.stats()["webhook"]
    assert (stats.sent, stats.dropped, stats.failed_attempts) == (2, 2, 1)


async def test_a_receiver_that_does_not_answer_times_out_retryably(pki: Pki) -> None:
    """No answer within timeout_s is a retryable failure, not a hang."""
    async with receiver(pki) as (hook, url):
        hook.answers = ["hang"]
        exporter = exporter_for(url, pki, timeout_s=0.02)
        with pytest.raises(ExportFailed) as caught:
            await exporter.send(make_records(1))
        await exporter.aclose()
    assert not caught.value.permanent and "timed out" in caught.value.detail


async def test_a_certificate_outside_the_trusted_cas_is_refused(pki: Pki) -> None:
    """With the system trust store the test CA's server is not trusted: nothing is posted."""
    async with receiver(pki) as (hook, url):
        exporter = WebhookExporter(url, KEY)
        with pytest.raises(ExportFailed) as caught:
            await exporter.send(make_records(1))
        await exporter.aclose()
    assert not caught.value.permanent
    assert hook.requests == []


async def test_nothing_logged_or_raised_names_the_key_or_the_url_path(pki: Pki,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Failures name only scheme, host and port: webhook paths often hold tokens, and the key never appears.

    (httpx2's own INFO log line does name the URL; the gateway's log setup only emits ``portcullis.*``.)
    """
    async with receiver(pki) as (hook, url):
        hook.answers = [500, 500]
        exporter = exporter_for(url, pki)
        with caplog.at_level(logging.DEBUG, logger="portcullis"):
            async with ExportQueue([exporter], max_attempts=2, sleep=FakeSleep()) as queue:
                queue.offer(make_records(1)[0])
    assert queue.stats()["webhook"].dropped == 1
    ours = [r for r in caplog.records if r.name.startswith("portcullis")]
    assert [r.getMessage() for r in ours] == ["audit export gave up a batch"]
    text = repr([r.__dict__ for r in ours]) + repr(exporter)
    assert TOKEN_IN_PATH not in text and KEY.decode() not in text
    assert exporter.where in text and "HTTP 500" in text


# --------------------------------------------------------------------------- construction


def test_plain_http_is_refused_by_default() -> None:
    """An http:// URL is a configuration error unless allow_insecure_http says otherwise."""
    with pytest.raises(ValueError, match="https"):
        WebhookExporter("http://siem.example.com/hook", KEY)


async def test_allow_insecure_http_works_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """The unsafe switch permits http:// and logs a warning that names no path or key."""
    async with receiver(None) as (hook, url):
        with caplog.at_level(logging.WARNING, logger="portcullis.audit.siem"):
            exporter = WebhookExporter(url, KEY, allow_insecure_http=True, clock=clock)
        await exporter.send(make_records(1))
        await exporter.aclose()
    assert [r.getMessage() for r in caplog.records] == [
        "allow_insecure_http: audit records and their signatures go to the webhook in cleartext"]
    assert TOKEN_IN_PATH not in caplog.text
    assert verify_signature(KEY, hook.requests[0].headers["x-portcullis-signature"], hook.requests[0].body, NOW)


@pytest.mark.parametrize(("url", "key", "match"), [
    ("https://user:pw@siem.example.com/hook", KEY, "credentials"),
    ("ftp://siem.example.com/hook", KEY, "https"),
    ("https:///nohost", KEY, "url"),
    ("https://siem.example.com/hook", b"short", "16 bytes"),
])
def test_bad_webhook_settings_are_refused(url: str, key: bytes, match: str) -> None:
    """Credentials in the URL, other schemes, no host and short keys are refused at construction."""
    with pytest.raises(ValueError, match=match) as caught:
        WebhookExporter(url, key)
    assert "pw" not in str(caught.value)


# --------------------------------------------------------------------------- verify_signature


BODY = b'[{"index":0}]'


@pytest.mark.parametrize(("header", "now", "ok"), [
    (signature_header(KEY, BODY, NOW), NOW, True),
    (signature_header(KEY, BODY, NOW), NOW + 300, True),
    (signature_header(KEY, BODY, NOW), NOW + 301, False),  # stale: replay window closed
    (signature_header(KEY, BODY, NOW), NOW - 301, False),  # from the future
    (signature_header(b"x" * 32, BODY, NOW), NOW, False),  # another key
    (signature_header(KEY, BODY + b" ", NOW), NOW, False),  # another body
    (signature_header(KEY, BODY, NOW).replace(f"t={NOW}", f"t={NOW + 1}"), NOW, False),  # timestamp moved
    (f"t={NOW},v1=00,v1={signature_header(KEY, BODY, NOW).split('v1=')[1]}", NOW, True),  # any v1 may match
    (signature_header(KEY, BODY, NOW).upper().replace("T=", "t=").replace("V1=", "v1="), NOW, True),
    (f"v1={signature_header(KEY, BODY, NOW).split('v1=')[1]}", NOW, False),  # no timestamp
    (f"t={NOW},t={NOW},v1=00", NOW, False),
    (f"t={NOW}", NOW, False),
    (f"t=-{NOW},v1=00", NOW, False),
    ("t=１２,v1=00", NOW, False),  # non-ASCII digits  # noqa: RUF001
    (f"t={NOW},v1=00,v2=11", NOW, False),
    ("", NOW, False),
    ("garbage", NOW, False),
    (f"t={NOW},v1=" + "a" * 2000, NOW, False),
])
def test_verify_signature_accepts_only_fresh_matching_signatures(header: str, now: int, ok: bool) -> None:
    """Receivers' check: right key, right body, within tolerance, well-formed — nothing else passes."""
    assert verify_signature(KEY, header, BODY, now) is ok


async def test_a_record_that_is_not_json_is_refused_and_the_rest_posted(pki: Pki) -> None:
    """One unserialisable record is left out of the array and reported as refused; a batch of only such is not sent."""
    async with receiver(pki) as (hook, url):
        exporter = exporter_for(url, pki)
        good = make_records(2)
        assert await exporter.send([good[0], {"bad": {1, 2}}, good[1]]) == 1
        assert await exporter.send([{"bad": {1}}]) == 1
        await exporter.aclose()
    [request] = hook.requests
    assert orjson.loads(request.body) == good

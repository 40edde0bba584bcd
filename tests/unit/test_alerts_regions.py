"""The region signal and cross_region_spike: a caller seen from one region alerts on a window from two CIDRs,
not on steady single- or two-region traffic; an unknown address is not a region unless configured; the
address wins over the principal attribute; the transport hands the TCP peer (never a forwarded header)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.identity.principal import Principal
from portcullis.monitoring.config import AlertsConfig
from portcullis.monitoring.detectors import Alert
from portcullis.monitoring.monitor import Monitor
from portcullis.monitoring.regions import RegionMap
from portcullis.pipeline.context import CallContext, CallRecord

T0 = 1_800_000_000.0
REGIONS = {"eu-west": ["10.1.0.0/16", "2001:db8:1::/48"], "us-east": ["10.2.0.0/16"],
           "eu-west-dub": ["10.1.7.0/24"]}
EU, US, NOWHERE = "10.1.3.4", "10.2.9.9", "192.0.2.1"


@pytest.mark.parametrize(("address", "region"), [
    ("10.1.3.4", "eu-west"),
    ("10.1.7.200", "eu-west-dub"),  # the longest prefix wins
    ("::ffff:10.2.0.1", "us-east"),  # IPv4-mapped is the IPv4 address
    ("2001:db8:1:ffff::1", "eu-west"),
    ("2001:db8:1::1%eth0", "eu-west"),  # a zone id is ignored
    ("2001:db8:2::1", None),
    ("192.0.2.1", None),
    ("not an address", None),
    ("", None),
    (None, None),
    (("10.1.3.4", 80), None),  # not a string
])
def test_region_of_an_address(address: object, region: str | None) -> None:
    assert RegionMap(REGIONS).of_address(address) == region


def test_the_address_wins_over_the_attribute_and_unknown_counts_only_when_configured() -> None:
    """A claim travels with a stolen token; the address the gateway saw does not."""
    alice = SimpleNamespace(attributes={"region": "ap-south"})
    anonymous = SimpleNamespace(attributes={})
    regions = RegionMap(REGIONS, attribute="region")
    assert regions.region(EU, alice) == "eu-west"
    assert regions.region(NOWHERE, alice) == "ap-south"
    assert regions.region(NOWHERE, anonymous) is None
    assert RegionMap(REGIONS, count_unknown=True).region(NOWHERE, alice) == "unknown"
    assert not RegionMap({}).configured and RegionMap({}, attribute="region").configured


@pytest.mark.parametrize("bad", [
    {"regions": {"a": ["10.0.0.1/8"]}},  # host bits set
    {"regions": {"a": ["10.0.0.0/33"]}},
    {"regions": {"a": ["eu"]}},
    {"regions": {"a": ["10.0.0.0/8"], "b": ["10.0.0.0/8"]}},  # one network, two regions
    {"regions": {"unknown": ["10.0.0.0/8"]}},  # reserved for an address in no CIDR
    {"regions": {"a b": ["10.0.0.0/8"]}},
    {"containment": [{"rule": "cross_region_spike", "kind": "agent"}]},  # no signal configured
    {"floors": {"cross_region_spike": 1}},
])
def test_region_configuration_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        AlertsConfig.model_validate(bad)


def _ctx(source: str | None, agent: str = "roamer") -> CallContext:
    record = CallRecord()
    principal = Principal(client_id="c", auth_method="dev", issuer="dev", agent_id=agent)
    return CallContext(request_id="r", jsonrpc_id=1, protocol_version="2026-07-28", tool_name="t.x", arguments={},
                       started_ns=0, principal=principal, record=record, source=source)


def traffic(minutes: Sequence[Sequence[str | None]], **config: Any) -> list[Alert]:
    """Each minute, one call from each listed address, through Monitor.observe and the drain."""
    now = [T0]
    cfg = AlertsConfig.model_validate({"regions": REGIONS, "learn_s": 0, **config})
    monitor = Monitor.from_config(cfg, clock=lambda: now[0], audit=None, counted=None, notify=None)
    alerts: list[Alert] = []
    for minute, sources in enumerate(minutes):
        for i, source in enumerate(sources):
            now[0] = T0 + minute * 60 + i
            monitor.observe(_ctx(source), "ok", 10)
        alerts += monitor.drain()
    now[0] = T0 + len(minutes) * 60
    return [a for a in alerts + monitor.drain() if a.rule == "cross_region_spike"]


def test_a_burst_from_two_regions_alerts_and_steady_single_region_traffic_does_not() -> None:
    steady: list[list[str | None]] = [[EU, EU, "10.1.200.1"]] * 40
    assert traffic(steady) == []
    [alert] = traffic([*steady, [EU, US, EU]])
    assert alert.key == (("agent", "roamer"),) and alert.observed == 2
    assert alert.baseline == pytest.approx(1) and alert.threshold == pytest.approx(1.8)


def test_steady_two_region_traffic_and_a_young_key_do_not_alert() -> None:
    """A caller that always comes from two regions is its own baseline; a key without history is not judged."""
    assert traffic([[EU, US]] * 40 + [[EU, US]]) == []
    assert traffic([[EU]] * 10 + [[EU, US]]) == []  # min_history not reached


def test_unknown_addresses_are_not_a_region_unless_configured() -> None:
    history: list[list[str | None]] = [[EU]] * 40
    assert traffic([*history, [EU, NOWHERE, None]]) == []
    [alert] = traffic([*history, [EU, NOWHERE]], count_unknown_region=True)
    assert alert.observed == 2


def test_idle_and_unlocated_windows_do_not_dilute_the_baseline() -> None:
    """Silent minutes between active ones are not folded into the region baseline (else 1 → 0.5 and the
    variance would hide a two-region window)."""
    minutes: list[list[str | None]] = [[EU] if m % 2 else [] for m in range(80)]
    assert len(traffic([*minutes, [EU, US]])) == 1


async def test_the_transport_hands_the_tcp_peer_and_never_a_forwarded_header(tmp_path: Path) -> None:
    """The call context the pipeline (hence the record stage) receives carries scope["client"]'s address on
    both protocol eras; an X-Forwarded-For header changes nothing."""
    from portcullis.state.memory import InMemoryStateStore
    from portcullis.transport.protocol import Dispatcher
    from tests.security.test_log_levels_replicas import HEADERS, replica

    app = replica(tmp_path, InMemoryStateStore(), "a")
    seen: list[Any] = []

    class NoCatalog:
        def lookup(self, name: str) -> None:
            return None

    async def pipeline(ctx: CallContext) -> dict[str, Any]:
        seen.append(ctx.source)
        return {}

    app._dispatcher = Dispatcher(NoCatalog(), pipeline)  # type: ignore[arg-type]

    async def post(message: dict[str, Any], extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
        sent: list[dict[str, Any]] = []
        chunks = [{"type": "http.request", "body": json.dumps(message).encode(), "more_body": False}]

        async def receive() -> dict[str, Any]:
            return chunks.pop(0) if chunks else {"type": "http.disconnect"}

        async def send(event: Any) -> None:
            sent.append(event)

        headers = {**HEADERS, "X-Forwarded-For": "10.2.9.9", **extra}
        scope = {"type": "http", "method": "POST", "path": "/mcp", "client": ("10.1.3.4", 4000),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
        await app(scope, receive, send)
        return list(sent[0]["headers"])

    params: dict[str, Any] = {"name": "x.y", "arguments": {}}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    await post({**call, "params": {**params, "_meta": meta}},
               {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "x.y"})
    headers = await post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}, {})
    session = dict(headers)[b"mcp-session-id"].decode()
    await post(call, {"Mcp-Session-Id": session})
    assert seen == ["10.1.3.4", "10.1.3.4"]  # the modern call and the 2025-era one


def test_a_flood_of_addresses_and_long_attributes_stays_bounded() -> None:
    """10,000 made-up source addresses keep at most CACHE_SIZE remembered; an attribute region is cut."""
    from portcullis.monitoring.regions import CACHE_SIZE, MAX_REGION_CHARS

    regions = RegionMap(REGIONS, attribute="region")
    principal = SimpleNamespace(attributes={"region": "r" * 10_000})
    for i in range(10_000):
        regions.region(f"172.{i % 250}.{i // 250}.1", principal)
        assert len(regions._cache) <= CACHE_SIZE
    assert regions.region("172.16.0.9", principal) == "r" * MAX_REGION_CHARS
    assert regions.region(EU, principal) == "eu-west"  # still right after the cache started over

"""The services part of an incident report: build identities and spawns (``incident.py`` uses it).

Pure, like ``incident.py``: records in, frozen values out; a field of the wrong type reads as absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from portcullis.audit.incident_model import NOT_RECORDED, BuildSeen, ServiceIdentity, SpawnSeen
from portcullis.audit.record import AuditRecord

SERVICE_KINDS = frozenset({"spawn", "service_identity"})  # about a service, not a request: under services


def get(obj: object, *path: str) -> Any:
    """``obj[path[0]][path[1]]…`` or ``None``; a non-mapping on the way reads as absent."""
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def text(value: object) -> str | None:
    """A string field, or ``None`` for absent or non-string (tampered) values."""
    return value if isinstance(value, str) else None


def sorted_text(values: Iterable[object]) -> tuple[str, ...]:
    return tuple(sorted({v for v in values if isinstance(v, str) and v}))


def service_identity(name: str, heads: Sequence[AuditRecord], before: Sequence[AuditRecord],
             about: Sequence[AuditRecord]) -> ServiceIdentity:
    reported = sorted_text(get(r.fields, "tool", "service_version") for r in heads
                       if get(r.fields, "tool", "service") == name)
    mine = [(r, True) for r in before if get(r.fields, "service") == name]
    mine += [(r, False) for r in about if get(r.fields, "service") == name]
    spawns = tuple(_spawn(r, before_window=b) for r, b in mine if r.kind == "spawn")
    builds = _builds([(r, b) for r, b in mine if r.kind == "service_identity"])
    distinct = list(dict.fromkeys(_build_key(b) for b in builds))
    build = " -> ".join(_build_line(b) for b in builds) or NOT_RECORDED
    return ServiceIdentity(name, reported or (NOT_RECORDED,), build, builds, len(distinct) > 1, spawns)


def _builds(records: Sequence[tuple[AuditRecord, bool]]) -> tuple[BuildSeen, ...]:
    """The identities in record order, consecutive equal ones folded into the first."""
    out: list[BuildSeen] = []
    for record, before_window in records:
        seen = _build(record, before_window=before_window)
        if out and _build_key(out[-1]) == _build_key(seen):
            last = out[-1]
            out[-1] = BuildSeen(last.index, last.ts, last.before_window, last.records + 1, *_build_key(last))
        else:
            out.append(seen)
    return tuple(out)


def _build_key(b: BuildSeen) -> tuple[Any, ...]:
    """Everything that identifies a build (not when or how often it was recorded)."""
    return (b.transport, b.server_name, b.server_version, b.protocol_version, b.executable, b.executable_sha256,
            b.script, b.script_sha256, b.module, b.origin)


def _build(record: AuditRecord, *, before_window: bool) -> BuildSeen:
    f = record.fields
    return BuildSeen(
        index=record.index, ts=record.ts, before_window=before_window, records=1,
        transport=text(get(f, "transport")) or NOT_RECORDED,
        server_name=text(get(f, "server_info", "name")) or NOT_RECORDED,
        server_version=text(get(f, "server_info", "version")) or NOT_RECORDED,
        protocol_version=text(get(f, "protocol_version")) or NOT_RECORDED,
        executable=text(get(f, "executable", "path")), executable_sha256=text(get(f, "executable", "sha256")),
        script=text(get(f, "script", "path")), script_sha256=text(get(f, "script", "sha256")),
        module=text(get(f, "module")), origin=text(get(f, "origin")))


def _build_line(b: BuildSeen) -> str:
    """One build identity on one line (``build``): what it said, then what ran or where it was reached."""
    ran = [f"{what} sha256:{digest}" for what, digest in (("executable", b.executable_sha256),
                                                          ("script", b.script_sha256)) if digest]
    ran += [f"module {b.module}"] if b.module else []
    ran += [f"origin {b.origin}"] if b.origin else []
    return f"{b.server_name} {b.server_version} ({b.transport}, {b.protocol_version}" + "".join(
        f"; {r}" for r in ran) + ")"


def _spawn(record: AuditRecord, *, before_window: bool) -> SpawnSeen:
    unsafe = get(record.fields, "confinement", "unsafe")
    return SpawnSeen(
        index=record.index, ts=record.ts, before_window=before_window,
        outcome=text(get(record.fields, "outcome")) or NOT_RECORDED,
        launcher=text(get(record.fields, "launcher")) or NOT_RECORDED,
        program=text(get(record.fields, "program")) or NOT_RECORDED,
        backend=text(get(record.fields, "confinement", "backend")) or NOT_RECORDED,
        network=text(get(record.fields, "confinement", "network")) or NOT_RECORDED,
        unsafe=sorted_text(unsafe) if isinstance(unsafe, list) else (),
        reason=text(get(record.fields, "reason")))

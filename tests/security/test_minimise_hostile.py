"""Hostile rows for the service kit's data-minimisation helpers (:mod:`portcullis.service.minimise`).

Nested pointers, ``~``/``/`` escaping, Unicode keys (no normalisation: NFC and NFD are different
keys), huge rows, k thresholds, values JSON does not have, and results that hold undeclared fields.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import anyio
import pytest
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from portcullis.service.minimise import (
    FULL_MASK,
    Metric,
    MinimisationError,
    aggregate,
    declared_output,
    masked,
    parse_pointer,
    project,
)

RECORD: dict[str, Any] = {
    "id": "ORD-1",
    "a/b": 1, "m~n": 2, "~1": 3, "": 4, " ": 5,
    "customer": {"name": "Ada", "email": "ada@example.com", "card": "4242 4242 4242 4242",
                 "address": {"city": "Paris", "street": "1 rue"}},
    "items": [{"sku": "A", "price": 1}, {"sku": "B", "price": 2}, {"sku": "C", "price": 3}],
    unicodedata.normalize("NFC", "café"): "nfc", unicodedata.normalize("NFD", "café"): "nfd",
    "秘密": "cjk", "👩‍💻": "zwj",
}

PROJECTIONS = [  # (label, fields, expected view)
    ("one field", ["/id"], {"id": "ORD-1"}),
    ("nested", ["/customer/address/city"], {"customer": {"address": {"city": "Paris"}}}),
    ("two nested share a parent", ["/customer/name", "/customer/address/city"],
     {"customer": {"name": "Ada", "address": {"city": "Paris"}}}),
    ("slash escaped", ["/a~1b"], {"a/b": 1}),
    ("tilde escaped", ["/m~0n"], {"m~n": 2}),
    ("escape order (~01 is '~1', not '/')", ["/~01"], {"~1": 3}),
    ("empty key", ["/"], {"": 4}),
    ("space key", ["/ "], {" ": 5}),
    ("array element", ["/items/1/sku"], {"items": [{"sku": "B"}]}),
    ("array elements keep index order", ["/items/2/sku", "/items/0/price"], {"items": [{"price": 1}, {"sku": "C"}]}),
    ("array: leading zero is not an index", ["/items/01/sku"], {}),
    ("array: '-' is not an element", ["/items/-"], {}),
    ("array: out of range", ["/items/3"], {}),
    ("array: non-ascii digits", ["/items/\u0661"], {}),
    ("through a scalar", ["/id/x"], {}),
    ("NFC key only", ["/" + unicodedata.normalize("NFC", "café")], {unicodedata.normalize("NFC", "café"): "nfc"}),
    ("NFD key only", ["/" + unicodedata.normalize("NFD", "café")], {unicodedata.normalize("NFD", "café"): "nfd"}),
    ("CJK key", ["/秘密"], {"秘密": "cjk"}),
    ("emoji ZWJ key", ["/👩‍💻"], {"👩‍💻": "zwj"}),
    ("missing", ["/nope"], {}),
    ("duplicate pointer", ["/id", "/id"], {"id": "ORD-1"}),
    ("parent and child", ["/customer/address", "/customer/address/city"],
     {"customer": {"address": {"city": "Paris", "street": "1 rue"}}}),
]


@pytest.mark.parametrize(("label", "fields", "expected"), PROJECTIONS, ids=[p[0] for p in PROJECTIONS])
def test_project(label: str, fields: list[str], expected: dict[str, Any]) -> None:
    assert project(RECORD, fields) == expected, label


BAD_POINTERS = [
    ("whole record", ""),
    ("no leading slash", "id"),
    ("bad escape ~2", "/a~2"),
    ("lone tilde", "/a~"),
    ("too long", "/" + "a" * 600),
    ("too deep", "/a" * 40),
]


@pytest.mark.parametrize(("label", "pointer"), BAD_POINTERS, ids=[b[0] for b in BAD_POINTERS])
def test_bad_pointers_refused(label: str, pointer: str) -> None:
    with pytest.raises(MinimisationError):
        project(RECORD, [pointer])


def test_project_refuses_one_string_and_non_json() -> None:
    with pytest.raises(MinimisationError):
        project(RECORD, "/id")
    with pytest.raises(MinimisationError, match="not JSON"):
        project({"x": object()}, ["/x"])
    with pytest.raises(MinimisationError, match="NaN"):
        project({"x": [float("nan")]}, ["/x"])
    with pytest.raises(MinimisationError, match="not a string"):
        project({"x": {1: "a"}}, ["/x"])
    with pytest.raises(MinimisationError, match="missing"):
        project(RECORD, ["/nope"], missing="error")


def test_project_copies_and_never_leaks_siblings() -> None:
    view = project(RECORD, ["/customer/address"])
    view["customer"]["address"]["city"] = "changed"
    assert RECORD["customer"]["address"]["city"] == "Paris"
    assert "email" not in str(view) and "4242" not in str(view)


def test_project_huge_row() -> None:
    row = {f"k{i}": "x" * 100 for i in range(100_000)}
    row["keep"] = {"deep": list(range(10))}
    assert project(row, ["/keep/deep/9", "/k99999"]) == {"keep": {"deep": [9]}, "k99999": "x" * 100}


def test_error_messages_hold_no_values() -> None:
    secret = "sk_live_" + "9" * 24
    for call in (lambda: project({"x": {secret: object()}}, ["/x"]),
                 lambda: aggregate([{"g": {"v": secret}}], ["/g"], k=1),
                 lambda: aggregate([{"g": "a", "v": secret}], ["/g"], Metric("sum", "/v"), k=1)):
        with pytest.raises(MinimisationError) as caught:
            call()
        assert secret not in str(caught.value)


# --------------------------------------------------------------------------- aggregate

ROWS = ([{"region": "emea", "amount": 10}] * 5 + [{"region": "amer", "amount": 7}] * 4
        + [{"region": "apac", "amount": 1.5}] * 6 + [{"amount": 3}] * 5)


def test_aggregate_suppresses_small_groups() -> None:
    out = aggregate(ROWS, ["/region"], [Metric("sum", "/amount", "total"), Metric("mean", "/amount", "avg")], k=5)
    by = {g["region"]: g for g in out.groups}
    assert set(by) == {"emea", "apac", None}  # amer has 4 rows < k
    assert out.suppressed_groups == 1
    assert by["emea"] == {"region": "emea", "count": 5, "total": 50, "avg": 10.0}
    assert by["apac"]["total"] == 9.0 and by[None]["count"] == 5


@pytest.mark.parametrize(("k", "shown", "suppressed"), [(1, 4, 0), (4, 4, 0), (5, 3, 1), (6, 1, 3), (7, 0, 4)])
def test_k_thresholds(k: int, shown: int, suppressed: int) -> None:
    out = aggregate(ROWS, ["/region"], k=k)
    assert (len(out.groups), out.suppressed_groups) == (shown, suppressed)
    assert all(g["count"] >= k for g in out.groups)


@pytest.mark.parametrize("k", [0, -1, True, 2.5, "5"])
def test_bad_k_refused(k: Any) -> None:
    with pytest.raises(MinimisationError):
        aggregate(ROWS, ["/region"], k=k)


def test_bool_and_int_groups_stay_apart() -> None:
    rows = [{"g": True}] * 2 + [{"g": 1}] * 2
    out = aggregate(rows, ["/g"], k=2)
    assert sorted((type(g["g"]).__name__, g["count"]) for g in out.groups) == [("bool", 2), ("int", 2)]


HOSTILE_AGG = [
    ("group value is an object", [{"g": {"x": 1}}], ["/g"], ()),
    ("group value is a list", [{"g": [1]}], ["/g"], ()),
    ("group value NaN", [{"g": float("nan")}], ["/g"], ()),
    ("metric is text", [{"g": "a", "v": "10"}], ["/g"], Metric("sum", "/v")),
    ("metric is bool", [{"g": "a", "v": True}], ["/g"], Metric("sum", "/v")),
    ("metric is inf", [{"g": "a", "v": float("inf")}], ["/g"], Metric("max", "/v")),
    ("row not a mapping", [["g", 1]], ["/g"], ()),
    ("by as one string", [{"g": 1}], "/g", ()),
]


@pytest.mark.parametrize(("label", "rows", "by", "metric"), HOSTILE_AGG, ids=[h[0] for h in HOSTILE_AGG])
def test_hostile_aggregate_refused(label: str, rows: list[Any], by: Any, metric: Any) -> None:
    with pytest.raises(MinimisationError):
        aggregate(rows, by, metric, k=1)


def test_metric_definitions_checked() -> None:
    for bad in (lambda: Metric("sum"), lambda: Metric("count", "/x"), lambda: Metric("median", "/x"),  # type: ignore[arg-type]
                lambda: Metric("sum", "x")):
        with pytest.raises(MinimisationError):
            bad()
    with pytest.raises(MinimisationError, match="collide"):
        aggregate(ROWS, ["/count"], k=1)
    with pytest.raises(MinimisationError, match="collide"):
        aggregate(ROWS, ["/region"], Metric("count"), k=1)
    assert aggregate(ROWS, ["/region"], Metric("count", name="n"), k=5).groups[0]["n"] == 5


def test_aggregate_huge_input_and_exact_sums() -> None:
    rows = ({"g": i % 3, "v": 10**15} for i in range(300_000))
    out = aggregate(rows, ["/g"], Metric("sum", "/v", "s"), k=100_000)
    assert sorted(g["s"] for g in out.groups) == [10**20] * 3


# --------------------------------------------------------------------------- masks

MASKS = [
    ("card", "4242 4242 4242 4242", "card", "****4242"),
    ("card auto", "4111111111111111", "auto", "****1111"),
    ("email", "ada.lovelace@example.com", "email", "a***@example.com"),
    ("email auto", "ada.lovelace@example.com", "auto", "a***@example.com"),
    ("email unicode local", "élodie@example.fr", "email", "é***@example.fr"),
    ("phone", "+1 (415) 555-0123", "phone", "***23"),
    ("iban", "GB82 WEST 1234 5698 7654 32", "iban", "GB***5432"),
    ("iban auto", "GB82WEST12345698765432", "auto", "GB***5432"),
    ("ssn", "123-45-6789", "ssn", "***-**-6789"),
    ("not a card", "42", "card", FULL_MASK),
    ("not an email", "ada@", "email", FULL_MASK),
    ("two @", "a@b@example.com", "email", FULL_MASK),
    ("auto on plain text", "hello world", "auto", FULL_MASK),
    ("auto on a card inside text", "card 4242 4242 4242 4242 ok", "auto", FULL_MASK),
    ("full", "anything", "full", FULL_MASK),
    ("empty", "", "auto", FULL_MASK),
    ("arabic-indic digits are not card digits", "\u0664" * 16, "card", FULL_MASK),
]


@pytest.mark.parametrize(("label", "value", "kind", "expected"), MASKS, ids=[m[0] for m in MASKS])
def test_masked(label: str, value: str, kind: Any, expected: str) -> None:
    assert masked(value, kind) == expected, label


def test_mask_never_returns_the_value() -> None:
    for value in ("x", "4242424242424242", "a@b.c", "☃" * 10_000):
        for kind in ("auto", "card", "email", "phone", "iban", "ssn", "full"):
            assert masked(value, kind) != value  # type: ignore[arg-type]
    with pytest.raises(MinimisationError):
        masked(4242, "card")  # type: ignore[arg-type]
    with pytest.raises(MinimisationError):
        masked("x", "name")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- declared output


class Summary(BaseModel):
    total: int
    rows: list[dict[str, Any]]


DECLARED = [  # (label, declared, result, refused)
    ("exact", ("/id", "/status"), {"id": 1, "status": "ok"}, False),
    ("fewer than declared", ("/id", "/status"), {"id": 1}, False),
    ("extra top-level field", ("/id",), {"id": 1, "email": "a@b.c"}, True),
    ("extra nested field", ("/customer/name",), {"customer": {"name": "A", "email": "a@b.c"}}, True),
    ("subtree declared", ("/customer",), {"customer": {"name": "A", "email": "a@b.c"}}, False),
    ("array wildcard", ("/rows/*/region",), {"rows": [{"region": "emea"}, {"region": "amer"}]}, False),
    ("array wildcard, extra in one element", ("/rows/*/region",),
     {"rows": [{"region": "emea"}, {"region": "amer", "email": "x"}]}, True),
    ("wildcard is not a mapping key", ("/*",), {"anything": 1}, True),
    ("escaped key", ("/a~1b",), {"a/b": 1}, False),
    ("escaped key is not its parts", ("/a~1b",), {"a": {"b": 1}}, True),
    ("scalar result", ("/x",), "text", True),
    ("pydantic model", ("/total", "/rows"), Summary(total=1, rows=[{"x": 1}]), False),
    ("pydantic model, undeclared", ("/total",), Summary(total=1, rows=[]), True),
]


@pytest.mark.parametrize(("label", "declared", "result", "refused"), DECLARED, ids=[d[0] for d in DECLARED])
def test_declared_output(label: str, declared: tuple[str, ...], result: Any, refused: bool) -> None:
    @declared_output(*declared)
    def tool() -> Any:
        return result

    @declared_output(*declared)
    async def async_tool() -> Any:
        return result

    if refused:
        with pytest.raises(ToolError) as caught:
            tool()
        assert "a@b.c" not in str(caught.value) and "email" not in str(caught.value)
        with pytest.raises(ToolError):
            anyio.run(async_tool)
    else:
        assert tool() is result
        assert anyio.run(async_tool) is result


def test_declared_output_keeps_the_signature() -> None:
    import inspect

    @declared_output("/id")
    async def get(order_id: str, *, verbose: bool = False) -> dict[str, Any]:
        return {"id": order_id}

    assert inspect.iscoroutinefunction(get)
    assert list(inspect.signature(get).parameters) == ["order_id", "verbose"]
    with pytest.raises(MinimisationError):
        declared_output()
    with pytest.raises(MinimisationError):
        declared_output("")


def test_parse_pointer_escapes() -> None:
    assert parse_pointer("/a~1b/c~0d/~01") == ("a/b", "c~d", "~1")

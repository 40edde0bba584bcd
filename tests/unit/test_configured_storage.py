"""The one reader of gateway.yaml's storage section for the CLI (storage migrate/status, kill, token revoke
and their replica notices): validated as serve validates it, only when it names the part asked for, and an
invalid section reported by its problem count, never by a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from portcullis.cli.storage_cmd import StorageSectionInvalid, configured_storage

PG = "postgresql:\n  url_ref: secret://env/PG_URL\n"
REDIS = "redis:\n  url_ref: secret://env/REDIS_URL\n"


def _deployment(tmp_path: Path, storage: str | None) -> Path:
    body = "version: 1\n" + ("" if storage is None else "storage:\n" + "".join(
        f"  {line}\n" for line in storage.splitlines()))
    (tmp_path / "gateway.yaml").write_text(body)
    return tmp_path


@pytest.mark.parametrize(("storage", "part"), [
    (None, "postgresql"), (REDIS, "postgresql"), (PG, "redis"), ("postgresql: null", "postgresql"),
])
def test_a_deployment_without_the_part_has_none(tmp_path: Path, storage: str | None, part: str) -> None:
    """No section, or a section without the part asked for: None (the embedded stores, no bus)."""
    assert configured_storage(_deployment(tmp_path, storage), part) is None


def test_no_config_and_a_section_that_is_not_a_mapping_are_none(tmp_path: Path) -> None:
    """Without --config nothing is read; a scalar section names no part."""
    assert configured_storage(None, "postgresql") is None
    (tmp_path / "gateway.yaml").write_text("version: 1\nstorage: postgresql\n")
    assert configured_storage(tmp_path, "postgresql") is None


def test_the_section_is_validated_whole_when_it_names_the_part(tmp_path: Path) -> None:
    """Both parts come back validated; asking for either gives the same configuration."""
    root = _deployment(tmp_path, PG + REDIS)
    for part in ("postgresql", "redis"):
        storage = configured_storage(root, part)
        assert storage is not None and storage.postgresql is not None and storage.redis is not None
        assert storage.postgresql.url_ref == "secret://env/PG_URL"


@pytest.mark.parametrize("hostile", [
    "postgresql:\n  url_ref: postgresql://ops:hunter2@db/x",  # a plain URL with its password, not a reference
    "postgresql:\n  url_ref: secret://env/PG_URL\n  pool_size: 0\n  password: hunter2",
    "postgresql:\n  url_ref: \"postgresql://ops:hunter2@db/\\e[31mx\"",  # and a terminal escape
])
def test_an_invalid_section_is_reported_by_its_problem_count_never_its_values(tmp_path: Path, hostile: str) -> None:
    """The text names how many problems and where to look, never the password or control bytes."""
    with pytest.raises(StorageSectionInvalid) as caught:
        configured_storage(_deployment(tmp_path, hostile), "postgresql")
    text = str(caught.value)
    assert text.startswith("storage: ") and "problem(s); run `portcullis lint`" in text
    assert "hunter2" not in text and "\x1b" not in text

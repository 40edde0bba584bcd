"""Suite-wide settings.

Hypothesis: under CI (``CI`` set) property tests are derandomized, so a run is reproducible and a
landing never depends on the luck of a draw; locally they explore fresh examples every run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.nodeid import NodeId
from hypothesis import settings

# An xdist worker starts with COLUMNS=80 and LINES=24 in its environment, which a single-process run does
# not have; a Rich console created at import then keeps 80x24 for good and ignores the COLUMNS a test
# gives its CLI invocation. Without them the CLI sizes its tables as in a single-process run.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Directories whose modules start gateways, upstreams and suites in module-scoped fixtures. Under xdist
# (`make test` runs `--dist loadgroup`) each of their modules is one group, run whole by one worker: split
# across workers, every worker that got a share would start the module's gateway again. Different modules
# still run in parallel; every other test is scheduled on its own, except modules elsewhere that start a
# module-scoped gateway and say so with their own `xdist_group` mark.
_BY_MODULE = {"e2e", "conformance", "cluster", "browser"}
_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.resolve()
        if path.is_relative_to(_TESTS) and path.relative_to(_TESTS).parts[0] in _BY_MODULE:
            item.add_marker(pytest.mark.xdist_group(name=path.relative_to(_TESTS).as_posix()))
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        _tag_groups(items)


def _tag_groups(items: list[pytest.Item]) -> None:
    """Give each grouped test the ``@group`` suffix that ``--dist loadgroup`` schedules by.

    pytest-xdist 3.8 writes the suffix to ``item._nodeid``, which pytest 9.2's nodes no longer read (the id
    lives in ``item._id``): without this every group was split across workers, so a module's gateway was
    started once per worker that got a share. Tested by tests/unit/test_xdist_groups.py.
    """
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        nodeid = item.nodeid
        if names and nodeid.rfind("@") <= nodeid.rfind("]"):
            item._id = NodeId.parse(f"{nodeid}@{'_'.join(names)}")  # type: ignore[attr-defined]


@pytest.fixture(scope="session", autouse=True)
def _state_dir_per_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``$PORTCULLIS_STATE_DIR`` is a directory of this test process (each xdist worker its own).

    A gateway, CLI command or child process that a test starts without naming a state directory would
    otherwise use ``./.portcullis`` in the repository: shared by parallel workers (whose gateways then refuse
    its locked stores), by later runs, and by a developer's own ``make run``. Tests that are about the
    default name it themselves (an explicit environment or ``monkeypatch``).
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PORTCULLIS_STATE_DIR", str(tmp_path_factory.mktemp("default-state")))
        yield

"""Runs one fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.atheris_driver NAME [libFuzzer args]``.

The target is imported inside ``atheris.instrument_imports`` so that the ``portcullis`` code it
reaches is coverage-instrumented. Used by ``test_fuzz_atheris.py`` (a short run per target in
``make test``) and by ``scripts/fuzz.py`` (longer local runs).
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris

    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.atheris_driver TARGET [libFuzzer arguments]")
    name = sys.argv.pop(1)
    with atheris.instrument_imports(include=["portcullis"]):
        from tests.fuzz.discovery import load

        fuzz_one = load(name)
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

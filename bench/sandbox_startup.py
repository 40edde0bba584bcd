"""Sandbox start-up cost per call: plain Python vs the same Python in the sandbox vs the code kit.

Each variant runs ``print(1)`` ``--n`` times in turn (interleaved, so machine load hits them alike) and
prints the median and p90 wall time per call in milliseconds:

- ``plain``: ``/usr/bin/python3 -I -S -c`` spawned by asyncio, no confinement;
- ``true``, ``sandbox true``: ``/usr/bin/true`` plain and in the sandbox (the confinement alone);
- ``sandbox``: :func:`portcullis.kits.sandbox.run` around the same argv (bwrap namespaces, the seccomp
  filter from an in-memory file, prlimit, the status pipe, output drained under the cap);
- ``code kit``: :meth:`portcullis.kits.code.CodeRunner.run` (adds the runner stub and a scratch
  directory made and removed per call).

Run: ``.venv/bin/python -m bench.sandbox_startup`` (``--n 40``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time

from portcullis.kits.code import CodeKitConfig, CodeRunner
from portcullis.kits.sandbox import SandboxSpec, detect_host, run

ARGV = ("/usr/bin/python3", "-I", "-S", "-c", "print(1)")
TRUE = ("/usr/bin/true",)


async def _plain(argv: tuple[str, ...]) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, env={})
    await proc.communicate()


async def main(n: int) -> None:
    host = detect_host()
    root = tempfile.mkdtemp(prefix="portcullis-bench-")
    os.chmod(root, 0o711)  # traversable by the sandbox's unprivileged host id, nothing listable
    runner = CodeRunner(CodeKitConfig(scratch_root=root), host)
    spec, true_spec = SandboxSpec(argv=ARGV), SandboxSpec(argv=TRUE)
    variants = {
        "true": lambda: _plain(TRUE), "sandbox true": lambda: run(true_spec, host),
        "plain": lambda: _plain(ARGV), "sandbox": lambda: run(spec, host),
        "code kit": lambda: runner.run("print(1)", tenant="b"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(n):
            for name, call in variants.items():
                started = time.perf_counter()
                await call()
                times[name].append((time.perf_counter() - started) * 1000)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = statistics.median(times["plain"])
    print(f"{'variant':<13} {'p50 ms':>8} {'p90 ms':>8} {'over plain python (p50)':>24}   (n={n})")
    for name, values in times.items():
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:<13} {statistics.median(values):8.1f} {p90:8.1f} {statistics.median(values) - base:+24.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    asyncio.run(main(parser.parse_args().n))

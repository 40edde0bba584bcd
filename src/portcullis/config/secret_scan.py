"""Literal secrets in a deployment directory, found with the output filter's own rules.

One decision, made once: the rules that keep a secret out of a tool's result
(:data:`portcullis.content.secret_rules.RULES`, run by
:class:`~portcullis.content.secrets.SecretDetector` with the same decoding of base64, hex and
URL-encoded runs) also keep one out of the repository. Step by step, per file:

1. the bytes are decoded as UTF-8 (undecodable bytes replaced: a binary file is still scanned);
2. a file longer than :data:`~.yaml_lines.MAX_BYTES` was read only in part: never "clean" (a warning
   where a deployment is loaded, whose own size checks then speak; an error in ``lint`` and ``secrets scan``);
3. :meth:`~portcullis.content.scan.DetectorSet.scan` runs the secret rules (a generous CPU budget:
   lint runs offline); a *blocked* result is an error ("could not be scanned"), never "clean";
4. findings inside a ``secret://`` reference are dropped (the reference is what should be there);
5. each remaining finding is a :class:`~portcullis.errors.Problem` at its line, under the rule's id
   (``secret.github.token``); the message names the rule and kind, never the value.

:func:`scan_directory` is ``portcullis secrets scan``: the walk :func:`portcullis.config.loader.lint_deployment`
makes (every file, dot-directories such as ``.github/`` included, but not ``.git/`` nor the gateway's
own state directory; symlinks leaving the directory refused), and these steps on every file.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import re
from collections.abc import Mapping
from pathlib import Path

from portcullis.config.yaml_lines import MAX_BYTES
from portcullis.content.budget import ScanBudget
from portcullis.content.findings import PLAIN, Finding
from portcullis.content.scan import DetectorSet
from portcullis.content.secrets import SecretDetector
from portcullis.errors import Problem

BUDGET = ScanBudget(cpu_ms=60_000.0)  # offline: a slow CI runner must not turn a clean file into "blocked"
_REFERENCE = re.compile(r"secret://[a-z][a-z0-9_-]{0,31}/[A-Za-z0-9_./#:@+=-]{1,512}")
UNSCANNED = "secret.unscanned"


@functools.cache
def _detectors() -> DetectorSet:
    return DetectorSet((SecretDetector(),))


def scan_file(path: Path, data: bytes) -> list[Problem]:
    """Every literal secret in one file's ``data`` (steps 1 to 5), each at its line."""
    if len(data) > MAX_BYTES:  # 2
        return [Problem(path, None, f"larger than {MAX_BYTES} bytes: not scanned for secrets whole; keep large "
                        "files out of the deployment directory", "warning", UNSCANNED)]
    text = data.decode("utf-8", errors="replace")  # 1
    result = _detectors().scan(text, BUDGET)  # 3
    if result.blocked:
        return [Problem(path, None, f"could not be scanned for secrets ({result.reason}): treated as unsafe",
                        "error", UNSCANNED)]
    references = [m.span() for m in _REFERENCE.finditer(text)]  # sorted, never overlapping
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    problems = []
    seen: set[tuple[str, int]] = set()
    for finding in result.findings:
        if _inside(finding, references):  # 4
            continue
        line = bisect.bisect_left(newlines, finding.start) + 1
        if (finding.rule_id, line) in seen:
            continue
        seen.add((finding.rule_id, line))
        how = "" if finding.encoding == PLAIN else f", {finding.encoding}-encoded"
        problems.append(Problem(path, line, f"literal secret ({finding.rule_id}: {finding.kind}{how}): use a "
                                "secret:// reference", "error", finding.rule_id))  # 5
    return problems


def _inside(finding: Finding, references: list[tuple[int, int]]) -> bool:
    """True if the finding lies within one ``secret://`` reference."""
    i = bisect.bisect_right([start for start, _ in references], finding.start) - 1
    return i >= 0 and finding.end <= references[i][1]


def scan_directory(root: Path, environ: Mapping[str, str] | None = None) -> list[Problem]:
    """``portcullis secrets scan``: the secrets (and unreadable files) of every file under ``root``."""
    from portcullis.config.loader import deployment_files

    problems, files = deployment_files(Path(root), environ)
    for rel, data in files.items():
        problems += scan_file(Path(root) / rel, data)
    return sorted(strict(problems), key=lambda p: (str(p.path), p.line or 0))


def strict(problems: list[Problem]) -> list[Problem]:
    """The CI gate's view: a file not scanned whole is an error, not a warning."""
    return [dataclasses.replace(p, severity="error") if p.rule == UNSCANNED else p for p in problems]

"""The repository files of ``portcullis init``: CODEOWNERS, the CI workflow and the README.

Contract: :func:`repo_files` returns ``{relative path: text}`` for

- ``.gitignore``: the gateway's default state directory (private keys) and lint's SARIF report;
- ``.github/CODEOWNERS``: ``*`` to the owner first, then the high-risk domains' tool directories,
  ``/policy/``, ``/gateway.yaml`` and ``/.github/`` to the security team and the owner (GitHub applies
  the LAST matching line, so the order goes from general to specific);
- ``.github/workflows/portcullis.yml``: three jobs, ``lint`` (SARIF to code scanning, then the table
  for the log), ``policy-test`` and ``secret-scan``, read-only token (``security-events: write`` only
  for the upload), ``portcullis`` pinned to ``version``, every action pinned by full commit SHA;
- ``README.md``: the layout, the daily loop and the branch-protection settings to apply, naming the
  three jobs as required status checks.

Inputs are validated by :mod:`portcullis.config.scaffold` (owners are GitHub handles or addresses,
domains safe path segments, ``version`` a public PEP 440 version).
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.config.scaffold_domains import TOOL_NAMES, Risk, tool_path

GITIGNORE = """\
# The gateway's state directory when it runs from here: private keys and stores, never configuration.
.portcullis/
# lint's SARIF report (CI uploads it to code scanning).
lint.sarif
"""
JOBS = ("lint", "policy-test", "secret-scan")  # also the required status checks
PYTHON = "3.12"
# Full commit SHAs of the actions' release tags (the tag in the trailing comment). A tag can be
# moved; a commit cannot. Update them with a tool that checks SHAs (Dependabot, Renovate).
CHECKOUT = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1  # v7.0.1"
SETUP_PYTHON = "actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97  # v7.0.0"
UPLOAD_SARIF = "github/codeql-action/upload-sarif@8aad20d150bbac5944a9f9d289da16a4b0d87c1e  # v4.36.2"


def repo_files(domains: Sequence[tuple[str, Risk]], owner: str, security_team: str, version: str) -> dict[str, str]:
    """CODEOWNERS, the workflow and the README for these (validated) domains and owners."""
    return {".gitignore": GITIGNORE, ".github/CODEOWNERS": codeowners(domains, owner, security_team),
            ".github/workflows/portcullis.yml": workflow(version),
            "README.md": readme(domains, owner, security_team)}


def _guarded(owner: str, security_team: str) -> str:
    return security_team if owner == security_team else f"{security_team} {owner}"


def codeowners(domains: Sequence[tuple[str, Risk]], owner: str, security_team: str) -> str:
    """``.github/CODEOWNERS``: general first, specific last (the last matching line wins)."""
    guarded = _guarded(owner, security_team)
    rows = [("*", owner)]
    rows += [(f"/tools/{name}/", guarded) for name, risk in domains if risk == "high"]
    rows += [("/policy/", guarded), ("/gateway.yaml", guarded), ("/.github/", guarded)]
    width = max(len(pattern) for pattern, _ in rows) + 2
    head = ["# Who must review a change (with \"Require review from Code Owners\" on the default branch).",
            "# GitHub applies the LAST line that matches a path: the general rule comes first.",
            "# High-risk tool definitions, the policy and its fixtures, the gateway configuration and CI itself",
            "# need the security team as well as the owner.", ""]
    return "\n".join(head + [pattern.ljust(width) + who for pattern, who in rows]) + "\n"


_WORKFLOW = """\
# The deployment's gate: every pull request is linted, its policies tested against the golden
# fixtures and its files scanned for literal secrets. Make the three jobs (lint, policy-test,
# secret-scan) required status checks of the default branch (README.md, "Branch protection").
name: portcullis

on:
  pull_request:
  push:
    branches: [main]  # your default branch
  workflow_dispatch:

# Read-only by default; only the lint job may write code-scanning results.
permissions:
  contents: read

env:
  # The portcullis release this repository is checked with: the one that scaffolded it. Raise it
  # in a pull request of its own, so a changed check shows up as that change.
  PORTCULLIS_VERSION: "{version}"
  # The gateway's state directory, outside the checkout (lint warns when it is inside the deployment).
  PORTCULLIS_STATE_DIR: /tmp/portcullis-state

jobs:
  lint:
    name: lint
    runs-on: ubuntu-latest
    timeout-minutes: 10
    permissions:
      contents: read
      security-events: write  # upload-sarif
    steps:
{setup}      - name: Lint (SARIF)
        run: portcullis lint . --format sarif --output lint.sarif
      # Findings appear in the Security tab and on the pull request's lines. Code scanning needs
      # GitHub code security on private repositories: without it this step fails but does not fail
      # the job (the lint steps do). Pull requests from forks get no write token and skip it.
      - name: Upload to code scanning
        if: >-
          ${{{{ !cancelled() && hashFiles('lint.sarif') != '' && (github.event_name != 'pull_request'
          || github.event.pull_request.head.repo.full_name == github.repository) }}}}
        continue-on-error: true
        uses: {upload_sarif}
        with:
          sarif_file: lint.sarif
          category: portcullis-lint
      - name: Lint (table, for this log)
        if: ${{{{ !cancelled() }}}}
        run: portcullis lint .

  policy-test:
    name: policy-test
    runs-on: ubuntu-latest
    timeout-minutes: 10
    steps:
{setup}      - name: Decide every fixture in policy/fixtures
        run: portcullis policy test .

  secret-scan:
    name: secret-scan
    runs-on: ubuntu-latest
    timeout-minutes: 10
    steps:
{setup}      - name: Scan every file for literal secrets
        run: portcullis secrets scan .
"""


_SETUP = f"""\
      - uses: {CHECKOUT}
        with:
          persist-credentials: false
      - uses: {SETUP_PYTHON}
        with:
          python-version: "{PYTHON}"
      - name: Install portcullis
        run: python -m pip install "portcullis==${{{{ env.PORTCULLIS_VERSION }}}}"
"""  # every job's first steps


def workflow(version: str) -> str:
    """``.github/workflows/portcullis.yml`` pinned to ``version`` (a validated public version)."""
    return _WORKFLOW.format(version=version, setup=_SETUP, upload_sarif=UPLOAD_SARIF)


_README = """\
# Portcullis deployment

This repository is the configuration of a Portcullis MCP gateway:
what it exposes, to whom, and under which policy. Every change goes through a pull request that CI
checks and code owners review.

## Layout

| path | what |
| --- | --- |
| `gateway.yaml` | listeners, identity, upstream services (one per domain), approvers |
| `tools/<domain>/<tool>.yml` | one manifest per exposed tool: owner, risk, classification, schema, policy, pin |
| `policy/fixtures/<domain>.yaml` | golden decisions: who may call what, with which arguments |
| `policy/data_class.yml` | the data classification scheme manifests refer to |
| `.github/CODEOWNERS` | who must review what |
| `.gitignore` | keeps the gateway's state (`.portcullis/`, private keys) and `lint.sarif` out of the repository |
| `.github/workflows/portcullis.yml` | the gate: `lint`, `policy-test`, `secret-scan` |

Risk domains:

| domain | risk | example tool | reviewed by |
| --- | --- | --- | --- |
{domain_rows}

## Daily loop

```sh
portcullis lint .                 # everything CI's lint job checks (add --format sarif for code scanning)
portcullis policy test .          # decide every fixture
portcullis secrets scan .         # literal secrets in any file
portcullis pin . --service <name> # after reviewing a tool's live definition: record its hash
```

The commands keep the gateway's state (keys, stores) in `./.portcullis` unless `PORTCULLIS_STATE_DIR` (or
`state_dir` in `gateway.yaml`) points elsewhere: point it outside this repository, as CI does.

A new tool is not served until it is pinned, and CI fails until a fixture names it. A high-risk
tool needs an approval path (`policy.requires_approval_over`, risk scoring or a Rego rule) and an
`approvals.approvers` rule in `gateway.yaml`. Never commit a secret: write `secret://env/NAME` (or
another `secret://` provider) where a credential goes; `secret-scan` fails the pull request otherwise.

## Branch protection

Apply these to the default branch (Settings → Branches → branch protection rule, or a ruleset
targeting the default branch). CODEOWNERS and the checks only protect the branch when they are
required:

- **Require a pull request before merging.**
  - **Required approvals: {approvals}**{approvals_note}.
  - **Require review from Code Owners** (`.github/CODEOWNERS`: {guarded} for high-risk tools,
    `policy/`, `gateway.yaml` and `.github/`; {owner} for the rest).
  - **Dismiss stale pull request approvals when new commits are pushed.**
  - **Require approval of the most recent reviewable push** (the last pusher cannot approve their own change).
- **Require status checks to pass before merging**, with these required checks: {checks}.
  - **Require branches to be up to date before merging** (the checks ran on what will be merged).
- **Do not allow force pushes** and **do not allow deletions**.
- **Do not allow bypassing the above settings** ("Include administrators"): nobody merges around the gate.
- Optional: **require signed commits**, **require linear history**, **require conversation resolution**.

Also keep `.github/workflows/portcullis.yml`'s actions pinned by commit SHA and its `PORTCULLIS_VERSION`
pinned (raise both in pull requests of their own), and let only the security team change `.github/`.
"""


def readme(domains: Sequence[tuple[str, Risk]], owner: str, security_team: str) -> str:
    """``README.md``: layout, daily loop and the branch-protection settings to apply."""
    guarded = _guarded(owner, security_team)
    rows = [f"| `{name}` | {risk} | `{tool_path(name, risk).removeprefix('tools/')}` ({TOOL_NAMES[risk]}) | "
            f"{guarded if risk == 'high' else owner} |" for name, risk in domains]
    high = any(risk == "high" for _, risk in domains)
    note = " (this repository has high-risk domains: a second reviewer sees every change)" if high else ""
    return _README.format(domain_rows="\n".join(rows), approvals=2 if high else 1, approvals_note=note,
                          guarded=guarded, owner=owner, checks=", ".join(f"`{job}`" for job in JOBS))

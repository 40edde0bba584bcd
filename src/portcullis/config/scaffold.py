"""``portcullis init``: scaffold a deployment repository, by risk domain, that passes its own CI gate.

Contract: :func:`init_deployment` writes, for the given risk domains (default :data:`DEFAULT_DOMAINS`):

1. ``gateway.yaml``: one identity provider (``corp``, to replace), one example HTTP service per domain
   (named after it), and for every high-risk domain an ``approvals.approvers`` rule;
2. per domain, ``tools/<domain>/<tool>.yml`` (an example tool of the domain's risk with full metadata
   and a policy; a high-risk one has an approval path) and ``policy/fixtures/<domain>.yaml`` (golden
   decisions that trip every rule of that policy) — :mod:`.scaffold_domains`;
3. ``policy/data_class.yml``, ``policy/README.md``;
4. ``.github/CODEOWNERS``, ``.github/workflows/portcullis.yml`` and ``README.md`` (branch protection)
   — :mod:`.scaffold_repo`.

The result lints with no errors (its only warnings: the example tools are not pinned yet), passes
``portcullis policy test`` and ``portcullis secrets scan``. Inputs are checked before anything is
written: domain names are service names (``[a-z][a-z0-9_-]{0,62}``, ASCII, so a safe path segment;
no duplicates, no device names), risks ``low``/``medium``/``high``, owners GitHub handles
(``@user``, ``@org/team``) or e-mail addresses; a refusal is a :class:`ValueError` whose message shows
the offending text ASCII-escaped. A non-empty target is refused unless ``force``; with ``force`` only
the scaffold's files are replaced (each written atomically, so a symlink in their place is replaced,
never written through) and everything else is left alone; a directory on the way that is a symlink (or
not a directory) is refused before anything is written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from portcullis import __version__
from portcullis.config.scaffold_domains import Risk, approver_rule, domain_files
from portcullis.config.scaffold_repo import repo_files

RISKS: tuple[Risk, ...] = ("low", "medium", "high")
MAX_DOMAINS = 32
DEFAULT_OWNER = "@your-org/platform-team"
DEFAULT_SECURITY_TEAM = "@your-org/security-team"
_DOMAIN = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # = a service name (config.model._SERVICE_NAME)
_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{n}" for n in range(10)), *(f"lpt{n}" for n in range(10))})
_OWNER = re.compile(r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(?:/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?"
                    r"|[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc)[0-9]+)?(?:\.post[0-9]+)?(?:\.dev[0-9]+)?")


@dataclass(frozen=True)
class Domain:
    """A risk domain: its tools live under ``tools/<name>/`` and come from the service ``<name>``."""

    name: str
    risk: Risk


DEFAULT_DOMAINS = (Domain("readonly", "low"), Domain("operations", "medium"), Domain("payments", "high"))


def _shown(text: str) -> str:
    return ascii(text[:80])


def parse_domain(spec: str) -> Domain:
    """``NAME:RISK`` (``payments:high``) as a :class:`Domain`; :class:`ValueError` if either part is unsafe."""
    name, sep, risk = spec.partition(":")
    if not sep or risk not in RISKS:
        raise ValueError(f"domain {_shown(spec)}: write NAME:RISK with RISK one of low, medium, high")
    return Domain(check_domain_name(name), risk)


def check_domain_name(name: str) -> str:
    """``name`` if it is a safe domain name (module docstring), else :class:`ValueError`."""
    if not name:
        raise ValueError("domain name is empty")
    if not _DOMAIN.fullmatch(name):
        raise ValueError(f"domain name {_shown(name)}: use lower-case ASCII letters, digits, '_' and '-', starting "
                         "with a letter, at most 63 characters (it names a directory and a service)")
    if name in _DEVICES:
        raise ValueError(f"domain name {_shown(name)} is a reserved device name on Windows")
    return name


def check_domains(domains: Sequence[Domain]) -> tuple[Domain, ...]:
    """The domains, each checked, none twice, between 1 and :data:`MAX_DOMAINS` of them."""
    if not domains:
        raise ValueError("no domains: give at least one --domain NAME:RISK")
    if len(domains) > MAX_DOMAINS:
        raise ValueError(f"{len(domains)} domains: at most {MAX_DOMAINS}")
    seen: set[str] = set()
    for domain in domains:
        check_domain_name(domain.name)
        if domain.risk not in RISKS:
            raise ValueError(f"domain {_shown(domain.name)}: risk must be low, medium or high")
        if domain.name in seen:
            raise ValueError(f"domain {_shown(domain.name)} is given twice")
        seen.add(domain.name)
    return tuple(domains)


def check_owner(value: str, option: str = "owner") -> str:
    """``value`` if it is a CODEOWNERS owner (``@user``, ``@org/team`` or an e-mail address)."""
    if not _OWNER.fullmatch(value):
        raise ValueError(f"{option} {_shown(value)}: give a GitHub handle (@user or @org/team) or an e-mail address")
    return value


def public_version(version: str = __version__) -> str:
    """The release of ``version`` that a package index serves (no local ``+…`` part), checked."""
    public = version.partition("+")[0]
    if not _VERSION.fullmatch(public):
        raise ValueError(f"version {_shown(version)} is not a release version the workflow can pin")
    return public


_GATEWAY_HEAD = """\
# Portcullis gateway configuration.
# Every key is documented in docs/configuration.md; editors can validate this file against
# schemas/gateway.schema.json. Unknown keys are errors. Never write a secret here: use a
# secret://env/NAME or secret://file/<absolute path> reference instead.
version: 1

# Where the gateway listens. Loopback only by default: nothing off this machine can reach it.
listen:
  host: 127.0.0.1
  port: 8080

# Bounds on what a client may send and how long a call may take.
limits:
  max_body_bytes: 1048576
  call_timeout_s: 30

# 2025-era MCP sessions are sealed with a key. Without key_ref, a random per-process key is used
# and sessions do not survive a restart. For more than one replica, set for example:
# sessions:
#   key_ref: secret://env/PORTCULLIS_SESSION_KEYS

# Who may call. Every request needs a bearer token from a trusted issuer (or a mapped client
# certificate); there is no anonymous default. Replace the example with your identity provider:
# the audience must be this gateway's canonical URI (default http://<host>:<port>/mcp). Caller
# patterns in the manifests and approvers below are scoped to it: issuer:corp/role:<role>.
identity:
  required_scopes: [mcp:tools]
  issuers:
    - name: corp
      issuer: https://idp.example.com
      discovery_url: https://idp.example.com/.well-known/openid-configuration
      algorithms: [ES256, RS256]
      audience: http://127.0.0.1:8080/mcp
      # How a token says "a person holds me" (only people approve): set your provider's claim.
      person:
        claim: principal_type
        equals: user
  # For local experiments only (warns at every start): trust `portcullis token issue`.
  # allow_insecure_dev_issuer: true

# Upstream MCP services by name, one per risk domain. Their tools are exposed as
# "<service>.<tool>" and only if a manifest under tools/<service>/ declares them.
services:
"""

DATA_CLASS_YML = """\
# Data classification scheme (schemas/data-class.schema.json): the four levels, least to most sensitive,
# each once. Manifests classify each tool's inputs and outputs with one of these names; a handling rule
# for a level applies to every level above it.
levels:
  - name: Public
    meaning: Meant for anyone; no harm if disclosed.
    handling:
      - No restrictions on callers or on logging.
  - name: Internal
    meaning: For employees and their agents; minor harm if disclosed.
    handling:
      - Callers are authenticated staff or agents acting for them.
  - name: Confidential
    meaning: Customer or business data; serious harm if disclosed.
    handling:
      - Only callers whose role needs it.
  - name: Restricted
    meaning: Credentials, payment or health data; severe harm if disclosed.
    handling:
      - Named people and approved agents only; risky calls need a person's approval.
"""

POLICY_README = """\
# policy/

- `data_class.yml`: the data classification scheme the manifests refer to.
- `fixtures/<domain>.yaml`: golden decisions, one file per risk domain. `portcullis policy test .`
  decides each; `portcullis lint .` fails while an exposed tool appears in none.
- `*.rego`: optional organisation-wide rules; they can only add denials and approvals to the native policies.
"""


_APPROVALS_HEAD = """\

# Human approval of calls a policy answers with require_approval (the high-risk domains' transfers
# above their threshold). Approvers are people with the domain's approver role, as corp asserts it.
# An approval binds the exact call, expires after 15 minutes and is used once.
approvals:
  ttl_s: 900
  approvers:
"""


def gateway_yaml(domains: Sequence[Domain]) -> str:
    """``gateway.yaml``: one service per domain; an approver rule per high-risk domain."""
    services = "".join(f"  {d.name}:\n    transport: http\n    url: http://127.0.0.1:{9001 + i}/mcp\n"
                       "    timeout_s: 10\n" for i, d in enumerate(domains))
    high = [approver_rule(d.name) for d in domains if d.risk == "high"]
    return _GATEWAY_HEAD + services + (_APPROVALS_HEAD + "".join(high) if high else "")


def scaffold_files(domains: Sequence[Domain] = DEFAULT_DOMAINS, *, owner: str = DEFAULT_OWNER,
                   security_team: str = DEFAULT_SECURITY_TEAM, version: str = __version__) -> dict[str, str]:
    """Every file of the scaffold, ``{relative path: text}`` in a stable order; inputs checked first."""
    domains = check_domains(domains)
    owner, security_team = check_owner(owner), check_owner(security_team, "security team")
    files = {"gateway.yaml": gateway_yaml(domains)}
    for domain in domains:
        files |= domain_files(domain.name, domain.risk, owner)
    files |= {"policy/data_class.yml": DATA_CLASS_YML, "policy/README.md": POLICY_README}
    pairs = [(d.name, d.risk) for d in domains]
    return files | repo_files(pairs, owner, security_team, public_version(version))


def init_deployment(target: Path, *, force: bool = False, domains: Sequence[Domain] = DEFAULT_DOMAINS,
                    owner: str = DEFAULT_OWNER, security_team: str = DEFAULT_SECURITY_TEAM) -> list[Path]:
    """Scaffold a deployment repository at ``target``; the files written, in a stable order."""
    from portcullis.config.loader import atomic_write_text  # not at import: the CLI starts without it

    files = scaffold_files(domains, owner=owner, security_team=security_team)  # refuses bad input first
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise FileExistsError(f"{target} is not empty (use force to write into it anyway)")
    for relative in files:  # a linked directory would take the write elsewhere: refuse before writing anything
        for parent in list(Path(relative).parents)[-2::-1]:
            if (target / parent).is_symlink() or ((target / parent).exists() and not (target / parent).is_dir()):
                raise FileExistsError(f"{target / parent} is a symbolic link or not a directory: init does not "
                                      "write through it")
    written = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written

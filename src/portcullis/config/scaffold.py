"""``portcullis init``: scaffold a deployment directory that lints clean.

Contract: :func:`init_deployment` writes ``gateway.yaml`` (one example HTTP service), one example
manifest ``tools/example/echo.yml``, ``policy/data_class.yml`` and ``policy/README.md``. It refuses
a non-empty target unless ``force``; with ``force`` it replaces only these files (each written
atomically, so a symlink in their place is replaced, never written through) and leaves anything
else alone. The result lints with no errors; its only warning is that ``echo`` is not pinned yet.
"""

from __future__ import annotations

from pathlib import Path

from portcullis.config.loader import atomic_write_text

GATEWAY_YAML = """\
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
# the audience must be this gateway's canonical URI (default http://<host>:<port>/mcp).
identity:
  required_scopes: [mcp:tools]
  issuers:
    - name: corp
      issuer: https://idp.example.com
      discovery_url: https://idp.example.com/.well-known/openid-configuration
      algorithms: [ES256, RS256]
      audience: http://127.0.0.1:8080/mcp
  # For local experiments only (warns at every start): trust `portcullis token issue`.
  # allow_insecure_dev_issuer: true

# Upstream MCP services by name. Their tools are exposed as "<service>.<tool>" and only if a
# manifest under tools/ declares them.
services:
  example:
    transport: http
    url: http://127.0.0.1:9001/mcp
    timeout_s: 10
"""

ECHO_YML = """\
# The one place that decides what the gateway exposes for this tool. A tool served by the
# upstream but missing here is hidden from clients.
name: echo
service: example
owner: platform-team@example.com
description: Return the given text unchanged.
risk: low
classification:
  input: Internal
  output: Internal
annotations:
  title: Echo
  readOnlyHint: true
  destructiveHint: false
  idempotentHint: true
  openWorldHint: false
input_schema:
  type: object
  properties:
    text:
      type: string
      maxLength: 1000
  required: [text]
  additionalProperties: false
# After reviewing the live definition, run `portcullis pin` to record its hash here as `pin:`.
"""

DATA_CLASS_YML = """\
# Data classification scheme, least to most sensitive. Manifests classify each tool's inputs and
# outputs with one of these names.
classes:
  - name: Public
    description: Meant for anyone; no harm if disclosed.
  - name: Internal
    description: For employees; minor harm if disclosed.
  - name: Confidential
    description: Customer or business data; serious harm if disclosed.
  - name: Restricted
    description: Credentials, payment or health data; severe harm if disclosed.
"""

POLICY_README = """\
# policy/

- `data_class.yml`: the data classification scheme the manifests refer to.
- `*.rego`: optional custom rules. They are kept with the deployment but not evaluated yet.
"""

FILES: dict[str, str] = {
    "gateway.yaml": GATEWAY_YAML,
    "tools/example/echo.yml": ECHO_YML,
    "policy/data_class.yml": DATA_CLASS_YML,
    "policy/README.md": POLICY_README,
}


def init_deployment(target: Path, *, force: bool = False) -> list[Path]:
    """Scaffold a deployment at ``target``; the files written, in a stable order."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise FileExistsError(f"{target} is not empty (use force to write into it anyway)")
    written = []
    for relative, text in FILES.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written

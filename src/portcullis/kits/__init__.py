"""Sandboxed building blocks for the risky kinds of tool a service exposes.

Each kit is its own module, imported directly (nothing is re-exported here):

- :mod:`portcullis.kits.files` — root-confined reads, writes and listings.
- :mod:`portcullis.kits.http` — allow-listed outbound HTTP, pinned to checked addresses.
- :mod:`portcullis.kits.sandbox` — process confinement (namespaces, seccomp, rlimits).
- :mod:`portcullis.kits.code` — untrusted Python run inside the sandbox.
- :mod:`portcullis.kits.sql` — parameterised templates and a read-only ad-hoc query tool.
"""

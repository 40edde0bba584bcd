#!/usr/bin/env bash
# System packages that `make run` / `make test` need on a fresh Debian machine: Python's venv
# module, Node.js with npm (for the MCP conformance suite and the reference stdio server), and the
# sandbox's bubblewrap, libseccomp and Debian's own python3 (the code kit runs /usr/bin/python3 inside
# the sandbox's read-only /usr; docs/sandbox.md).
# Installs only what is missing; needs root (or sudo) only when something is missing.
set -euo pipefail

missing=()
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
compgen -G '/usr/lib/*/libseccomp.so.2' >/dev/null || compgen -G '/lib/*/libseccomp.so.2' >/dev/null \
    || missing+=(libseccomp2)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
echo "bootstrap: installing Debian packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "bootstrap: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"

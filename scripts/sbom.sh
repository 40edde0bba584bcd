#!/usr/bin/env bash
# The CycloneDX 1.6 SBOM (JSON) of a Python environment, with this project as its main component.
#   scripts/sbom.sh PYTHON OUTPUT
# PYTHON is the environment's interpreter (`make sbom` builds a runtime-only venv for it: no dev tools);
# the output is reproducible (no serial number, no timestamp unless SOURCE_DATE_EPOCH is set) and validated
# against the CycloneDX schema before it is written. CYCLONEDX_PY names the tool (default: the dev venv's).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cyclonedx="${CYCLONEDX_PY:-$root/.venv/bin/cyclonedx-py}"
if [ "$#" -ne 2 ]; then
    echo "usage: scripts/sbom.sh PYTHON OUTPUT" >&2
    exit 2
fi
exec "$cyclonedx" environment --pyproject "$root/pyproject.toml" --mc-type application --sv 1.6 \
    --output-reproducible --validate --of JSON -o "$2" "$1"

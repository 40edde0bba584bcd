#!/usr/bin/env bash
# System packages that `make run` / `make test` need on a fresh Debian machine: Python's venv
# module, Node.js with npm (for the MCP conformance suite and the reference stdio server), the
# sandbox's bubblewrap, libseccomp and Debian's own python3 (the code kit runs /usr/bin/python3 inside
# the sandbox's read-only /usr; docs/sandbox.md), PostgreSQL (the SQL kit's engine tests; cluster
# mode), and Debian's Chromium with a font (the console's browser tests drive it headless through
# Playwright; docs/console.md "Testing"). Installs only what is missing; needs root (or sudo) only when something is missing or
# PostgreSQL is not running.
set -euo pipefail

SUDO=""
need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "bootstrap: need root or sudo to $1" >&2; exit 1; }
        SUDO="sudo"
    fi
}

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}

missing=()
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -x /usr/bin/python3 ] || missing+=(python3)
compgen -G '/usr/lib/*/libseccomp.so.2' >/dev/null || compgen -G '/lib/*/libseccomp.so.2' >/dev/null \
    || missing+=(libseccomp2)
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) >/dev/null 2>&1; }
fresh_postgres=0
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) >/dev/null 2>&1; }
# the binaries themselves too: the outage tests (tests/cluster/private_servers.py) run a private redis-server
# and a private PostgreSQL (initdb, pg_ctl) they can stop, even where the shared ones run elsewhere
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
pg_server_bin() {
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
if ! pg_up && ! command -v pg_ctlcluster >/dev/null 2>&1; then
    missing+=(postgresql)
    fresh_postgres=1
elif ! pg_server_bin; then
    missing+=(postgresql)  # for its binaries: the PostgreSQL on 5432 is left alone (Debian may add a cluster on 5433)
fi

# Chromium without its recommends (desktop portals, printing): headless needs only its own dependencies
# and one font for text (screenshots with no font show boxes).
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
fc-list 2>/dev/null | grep -qi . || browser+=(fonts-liberation)

if [ "${#missing[@]}" -gt 0 ] || [ "${#browser[@]}" -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${missing[*]} ${browser[*]}"
    need_root "install ${missing[*]} ${browser[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    [ "${#missing[@]}" -eq 0 ] || $SUDO apt-get install -y -qq "${missing[@]}"
    [ "${#browser[@]}" -eq 0 ] || $SUDO apt-get install -y -qq --no-install-recommends "${browser[@]}"
fi

# PostgreSQL on 127.0.0.1:5432 with a `test` database (tests create and drop their own schema and role
# there). A cluster this script installed is configured once: local connections to `test` are trusted
# (loopback only, that database only); an existing cluster's configuration is never touched.
if ! pg_up; then
    need_root "start PostgreSQL"
    version="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -z "$version" ] || $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    # the PostgreSQL tests then skip (locally) or fail (under CI) and say why
    pg_up || echo "bootstrap: warning: PostgreSQL is not listening on 127.0.0.1:5432" >&2
fi
if [ "$fresh_postgres" -eq 1 ] && pg_up; then
    need_root "configure PostgreSQL"
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    $SUDO sed -i '1i host test all 127.0.0.1/32 trust' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main reload
    as_postgres psql -q -tc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
        || as_postgres createdb test
fi

# Redis on 127.0.0.1:6379 (the cluster tests use keys under a prefix of their own). A server this script
# starts listens on loopback only, keeps nothing on disk and runs in the background.
if ! redis_up; then
    need_root "start Redis"
    $SUDO redis-server --bind 127.0.0.1 --port 6379 --protected-mode yes --save '' --appendonly no \
        --daemonize yes >/dev/null || true
    for _ in $(seq 1 30); do redis_up && break; sleep 1; done
    # the Redis tests then skip (locally) or fail (under CI) and say why
    redis_up || echo "bootstrap: warning: Redis is not listening on 127.0.0.1:6379" >&2
fi

# shellcheck shell=bash
# Shared by scripts/run.sh and scripts/test.sh (source it from the repository root):
# find PostgreSQL and Redis, or start the local ones when nothing answers.
# Whatever is started here is recorded in STARTED_SERVICES; stop_started_services
# stops exactly that, so a run leaves the machine as it found it.

STARTED_SERVICES=()

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The environment of `make run`, `make migrate` and the benches: a local
# development setup (DEBUG, a SQLite file in the state directory, Redis db 0). Values
# already in the environment win. The state directory is outside the checkout (the XDG
# one) unless the checkout's var/ already holds data: lib.env.default_var_dir.
dev_env() {
    export DEBUG=${DEBUG:-true}
    export PORT=${PORT:-8000}
    if [[ -z ${STEPWELL_VAR_DIR:-} ]]; then
        STEPWELL_VAR_DIR=$(.venv/bin/python -c 'import os, pathlib
from lib.env import default_var_dir
print(default_var_dir(pathlib.Path("var").resolve(), os.environ, pathlib.Path.home()))')
    fi
    export STEPWELL_VAR_DIR
    export DATABASE_URL=${DATABASE_URL:-sqlite:///$STEPWELL_VAR_DIR/stepwell.sqlite3}
    export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
}

# url_parts URL DEFAULT_PORT: prints "host port user" of a postgres:// or redis:// URL.
url_parts() {
    local re='^[a-z]+://(([^:@/]*)(:[^@/]*)?@)?(\[[^]/]+\]|[^:/?]*)(:([0-9]+))?'
    [[ $1 =~ $re ]] || die "cannot read host and port from $1"
    local host=${BASH_REMATCH[4]:-127.0.0.1}
    host=${host#[}; host=${host%]}
    echo "$host ${BASH_REMATCH[6]:-$2} ${BASH_REMATCH[2]:-}"
}

is_loopback() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

tcp_open() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# wait_for SECONDS COMMAND...: retry COMMAND every half second until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

stop_started_services() {
    local s
    for s in "${STARTED_SERVICES[@]}"; do
        case $s in
            redis:*) say "stopping the Redis started on port ${s#redis:}"
                     redis-cli -p "${s#redis:}" shutdown nosave >/dev/null 2>&1 || true ;;
            pg:*) say "stopping PostgreSQL cluster ${s#pg:}"
                  # shellcheck disable=SC2086
                  pg_ctlcluster --skip-systemctl-redirect ${s#pg:} stop >/dev/null 2>&1 || true ;;
        esac
    done
    STARTED_SERVICES=()
}

## Redis

redis_answers() {
    local host port
    read -r host port _ <<<"$(url_parts "$1" 6379)"
    if command -v redis-cli >/dev/null; then
        [[ $(redis-cli -u "$1" ping 2>/dev/null) == PONG ]]
    else
        [[ $(timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && head -c5 <&3' \
            "$host" "$port" 2>/dev/null) == +PONG ]]
    fi
}

# ensure_redis URL: Redis answers at URL, or a throwaway one (no persistence) is
# started on loopback at the URL's port.
ensure_redis() {
    local url=$1 host port
    read -r host port _ <<<"$(url_parts "$url" 6379)"
    if redis_answers "$url"; then
        say "Redis answers at $host:$port"
        return
    fi
    is_loopback "$host" || die "no Redis answers at $url (not on this machine, so not starting one)"
    tcp_open "$host" "$port" && die "something listens on $host:$port but does not answer as Redis at $url"
    command -v redis-server >/dev/null || die "redis-server is not installed (run: make install)"
    say "no Redis at $host:$port; starting redis-server on 127.0.0.1:$port"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --logfile "/tmp/stepwell-redis-$port.log" >/dev/null
    STARTED_SERVICES+=("redis:$port")
    wait_for 15 redis_answers "$url" || die "redis-server did not answer; see /tmp/stepwell-redis-$port.log"
}

## PostgreSQL

# pg_cluster PORT: prints "VERSION NAME" of the local Debian cluster on PORT
# (or the first one when none is configured on that port).
pg_cluster() {
    command -v pg_lsclusters >/dev/null || return 1
    local found
    found=$(pg_lsclusters -h | awk -v p="$1" '$3 == p {print $1, $2; exit}')
    [[ -n $found ]] || found=$(pg_lsclusters -h | awk '{print $1, $2; exit}')
    [[ -n $found ]] && echo "$found"
}

as_postgres() { su postgres -c "$(printf '%q ' "$@")"; }

# pg_prepare URL: connects as the URL's role, checks it may create databases
# (pytest-django makes test_<name>) and creates the URL's database if missing.
pg_prepare() {
    .venv/bin/python - "$1" <<'PY'
import sys
from urllib.parse import urlparse

import psycopg
from psycopg import sql

url = urlparse(sys.argv[1])
name = url.path.lstrip("/")
try:
    conn = psycopg.connect(url._replace(path="/postgres").geturl(), autocommit=True, connect_timeout=5)
except psycopg.OperationalError as e:
    sys.exit(f"cannot connect: {str(e).strip()}")
with conn:
    may = conn.execute(
        "select rolcreatedb or rolsuper from pg_roles where rolname = current_user"
    ).fetchone()[0]
    if not may:
        sys.exit("the role may not create databases (ALTER ROLE ... CREATEDB)")
    if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        print(f"==> created database {name}")
PY
}

# pg_allow_local URL ROLE PORT VERSION NAME: on a local Debian cluster, as root, make
# sure ROLE exists with CREATEDB and may log in over loopback without a password
# (Debian's default pg_hba.conf asks for one).
pg_allow_local() {
    local url=$1 role=$2 port=$3 ver=$4 name=$5
    [[ $(id -u) == 0 ]] || return 1
    local has
    has=$(as_postgres psql -p "$port" -Atc "select rolcreatedb or rolsuper from pg_roles where rolname = '$role'")
    if [[ -z $has ]]; then
        say "creating PostgreSQL role $role (CREATEDB)"
        as_postgres psql -p "$port" -qc "create role \"$role\" login createdb"
    elif [[ $has != t ]]; then
        say "granting CREATEDB to PostgreSQL role $role"
        as_postgres psql -p "$port" -qc "alter role \"$role\" createdb"
    fi
    pg_prepare "$url" >/dev/null 2>&1 && return 0
    local hba=/etc/postgresql/$ver/$name/pg_hba.conf
    if ! grep -q "^host all $role 127.0.0.1/32 trust" "$hba"; then
        say "allowing role $role on loopback without a password in $hba"
        sed -i "1i # added by Stepwell's scripts/services.sh for local tests\nhost all $role 127.0.0.1/32 trust\nhost all $role ::1/128 trust" "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
    fi
}

pg_answers() { tcp_open "$1" "$2"; }

# ensure_postgres URL: PostgreSQL answers at URL with a role that can create
# databases, starting (and if needed installing) the local Debian cluster.
ensure_postgres() {
    local url=$1 host port role cluster
    read -r host port role <<<"$(url_parts "$url" 5432)"
    role=${role:-$(id -un)}
    if ! pg_answers "$host" "$port"; then
        is_loopback "$host" || die "no PostgreSQL answers at $host:$port (not on this machine, so not starting one)"
        if ! command -v pg_ctlcluster >/dev/null; then
            [[ $(id -u) == 0 ]] || die "PostgreSQL is not installed and this is not root"
            say "installing the Debian postgresql package"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null \
                || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
        fi
        cluster=$(pg_cluster "$port") || die "no PostgreSQL cluster on this machine (pg_lsclusters)"
        say "no PostgreSQL at $host:$port; starting cluster $cluster"
        # shellcheck disable=SC2086
        pg_ctlcluster --skip-systemctl-redirect $cluster start
        STARTED_SERVICES+=("pg:$cluster")
        wait_for 30 pg_answers "$host" "$port" || die "PostgreSQL did not start; see /var/log/postgresql/"
    fi
    say "PostgreSQL answers at $host:$port"
    local why
    if why=$(pg_prepare "$url" 2>&1); then
        [[ -z $why ]] || echo "$why"
        return 0
    fi
    if is_loopback "$host" && cluster=$(pg_cluster "$port"); then
        # shellcheck disable=SC2086
        pg_allow_local "$url" "$role" "$port" $cluster || true
        if why=$(pg_prepare "$url" 2>&1); then
            [[ -z $why ]] || echo "$why"
            return 0
        fi
    fi
    die "PostgreSQL at $host:$port as role $role: $why"
}

#!/usr/bin/env bash
# The whole test suite against PostgreSQL and Redis (`make test`, `make test ARGS=-x`).
# The tests get their own database (pytest-django makes and drops test_stepwell),
# their own Redis db number, a fresh SECRET_KEY and STEPWELL_SECRET_KEYS, and a
# throwaway var dir; never the data of `make run`. Extra arguments go to pytest; its
# exit code is ours.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

[[ -x .venv/bin/python ]] || die ".venv is missing; run: make install"

export DATABASE_URL=${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/stepwell}
export REDIS_URL=${TEST_REDIS_URL:-redis://127.0.0.1:6379/13}
# Everything else that could point the tests at shared data follows the two above.
unset CELERY_BROKER_URL STEPWELL_CHANNELS_PREFIX STEPWELL_CELERY_EAGER
# Webhooks reach loopback receivers only: no test resolves or calls anything off the machine.
export STEPWELL_WEBHOOK_HOSTS=127.0.0.1,localhost STEPWELL_WEBHOOK_ALLOW_PRIVATE=true
SECRET_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))')
export SECRET_KEY DEBUG=false
# console/settings.py: a fast password hash for the thousands of users the tests make.
export STEPWELL_TEST_FAST_PASSWORD_HASHING=true
# Tenants' secrets are encrypted with it (API.md, Secrets): a fresh key per run too.
STEPWELL_SECRET_KEYS=$(.venv/bin/python -c 'import base64, os
print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
export STEPWELL_SECRET_KEYS
STEPWELL_VAR_DIR=$(mktemp -d /tmp/stepwell-test.XXXXXX)
# Sandboxed steps run as an unprivileged uid and may need to reach their state dir.
chmod 755 "$STEPWELL_VAR_DIR"
export STEPWELL_VAR_DIR
trap 'rm -rf "$STEPWELL_VAR_DIR"; stop_started_services' EXIT

ensure_postgres "$DATABASE_URL"
ensure_redis "$REDIS_URL"

cat <<EOF
==> Stepwell tests
    python        $(.venv/bin/python --version)
    DATABASE_URL  $DATABASE_URL (tests use test_${DATABASE_URL##*/})
    REDIS_URL     $REDIS_URL
    var dir       $STEPWELL_VAR_DIR (removed at exit)
    CI            ${CI:-false}
==> manage.py makemigrations --check --dry-run
EOF
if ! .venv/bin/python manage.py makemigrations --check --dry-run; then
    die "models and migrations disagree: run manage.py makemigrations and commit the result"
fi

# The engine's tests that mean something without PostgreSQL (the twins' own are skipped).
SQLITE_TESTS=(tests/execution/test_engine.py tests/execution/test_dispatch.py
    tests/execution/test_moderation.py tests/execution/test_history_quota.py
    tests/execution/test_lifecycle.py tests/execution/test_runs.py)
# The suites that run real stacks and jails, and the rest.
STACK_TESTS=(tests/integration tests/browser tests/sandbox)
status=0
if [[ $# -eq 0 ]]; then
    # The whole suite, as CI runs it, in two halves at once: the stack and jail tests
    # spend most of their time waiting on processes, the rest on the CPU. The second
    # half gets its own test database, Redis db, sandbox uids and var dir, then also
    # runs the engine's tests on SQLite, `make run`'s default: it must keep working
    # through the portable twins.
    redis_db=${REDIS_URL##*/}
    [[ $redis_db =~ ^[0-9]+$ ]] || die "REDIS_URL must end in a db number for the whole suite"
    other_var=$(mktemp -d /tmp/stepwell-test.XXXXXX)
    chmod 755 "$other_var"
    other_log="$other_var/pytest.log"
    ignores=()
    for path in "${STACK_TESTS[@]}"; do ignores+=("--ignore=$path"); done
    echo "==> pytest ${ignores[*]} (in the background; its output follows the other half's)"
    (
        export DATABASE_URL="${DATABASE_URL}_rest" REDIS_URL="${REDIS_URL%/*}/$(((redis_db + 1) % 16))"
        export STEPWELL_SANDBOX_UID=$((${STEPWELL_SANDBOX_UID:-99000} + 30000))
        export STEPWELL_VAR_DIR="$other_var"
        rest=0
        .venv/bin/pytest "${ignores[@]}" </dev/null || rest=$?
        if ((rest == 0)); then
            echo "==> pytest on SQLite: ${SQLITE_TESTS[*]}"
            DATABASE_URL="sqlite:///$other_var/test.sqlite3" \
                .venv/bin/pytest -q "${SQLITE_TESTS[@]}" </dev/null || rest=$?
        fi
        exit "$rest"
    ) >"$other_log" 2>&1 &
    other=$!
    echo "==> pytest ${STACK_TESTS[*]}"
    .venv/bin/pytest "${STACK_TESTS[@]}" </dev/null || status=$?
    wait "$other" || status=$((status ? status : $?))
    echo "==> the other half: pytest ${ignores[*]}"
    cat "$other_log"
    rm -rf "$other_var"
else
    echo "==> pytest $*"
    .venv/bin/pytest "$@" </dev/null || status=$?
    if [[ ${STEPWELL_TEST_SQLITE:-} == 1 ]] && ((status == 0)); then
        echo "==> pytest on SQLite: ${SQLITE_TESTS[*]}"
        DATABASE_URL="sqlite:///$STEPWELL_VAR_DIR/test.sqlite3" \
            .venv/bin/pytest -q "${SQLITE_TESTS[@]}" </dev/null || status=$?
    fi
fi
case $status in
    0) say "tests passed" ;;
    5) say "FAILED: pytest collected no tests (exit 5); the suite must not be empty" ;;
    *) say "FAILED: pytest exited with $status" ;;
esac
exit "$status"

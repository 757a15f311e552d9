#!/usr/bin/env bash
# `make run`: a local Stepwell on SQLite with web + worker + clock (the Procfile)
# until Ctrl-C, which stops them all. Starts a Redis on loopback if none answers,
# migrates, and creates the demo tenant and logins (manage.py seed_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

[[ -x .venv/bin/python ]] || die ".venv is missing; run: make install"

dev_env
mkdir -p "$STEPWELL_VAR_DIR"
# Prometheus multiprocess files of an earlier run: wiped before any process starts, as
# prometheus-client asks (honcho supervises every process that writes them).
rm -rf "${PROMETHEUS_MULTIPROC_DIR:-$STEPWELL_VAR_DIR/metrics}"
# The Procfile's commands (uvicorn, celery, python) come from the venv.
export PATH="$PWD/.venv/bin:$PATH"
trap stop_started_services EXIT

case $DATABASE_URL in
    postgres://* | postgresql://*) ensure_postgres "$DATABASE_URL" ;;
esac
ensure_redis "$REDIS_URL"

say "migrating $DATABASE_URL"
python manage.py migrate --noinput -v 0
# WhiteNoise serves what collectstatic gathers (hashed, compressed) when DEBUG is off.
python manage.py collectstatic --noinput -v 0
python manage.py seed_demo

cat <<EOF
==> Stepwell console: http://127.0.0.1:$PORT/  (admin: /admin/, API docs: /api/v1/docs)
    DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL DEBUG=$DEBUG
    state (STEPWELL_VAR_DIR): $STEPWELL_VAR_DIR
    starting web + worker + clock (Procfile); Ctrl-C stops them all
EOF
# Every process gets exactly this environment ("-e /dev/null": no .env file
# overriding it); honcho hands PORT to the first process, web.
# honcho answers Ctrl-C (SIGINT) with 130 and SIGTERM with 143, after stopping
# every process: that is a normal end. Anything else means a process died on its own.
# Bash waits for honcho through Ctrl-C; then the EXIT trap stops what we started.
trap : INT TERM
status=0
honcho start -e /dev/null -f Procfile -p "$PORT" || status=$?
case $status in
    130 | 143) say "stopped"; exit 0 ;;
    *) exit "$status" ;;
esac

#!/usr/bin/env bash
# Run ../shared/bench (floor, Django REST framework peer, this project) in one go:
# the project gets its own fresh PostgreSQL database `bench_project`, its migrations, an
# all-organizations key, and gunicorn with the shared settings. Extra arguments go to the
# shared driver, e.g. `bench/shared_bench.sh --duration 5 --endpoints get_one,list`.
# `bench/shared_bench.sh --with-idempotency-key [...]` adds a second target, project_idem:
# the same service on its own database (bench_project_idem), with a fresh Idempotency-Key
# on every write (bench/idempotency_key_wsgi.py), timed in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED_BENCH=${SHARED_BENCH:-../shared/bench}
PORT=${BENCH_PORT:-8077}
# The shared settings, but the project's own worker class (gunicorn.conf.py's), as the
# fastapi peer keeps its own; BENCH_WORKER_CLASS=sync for the shared one.
WORKER_CLASS=${BENCH_WORKER_CLASS:-gevent}
SERVERS=()
TARGETS=()
trap 'kill "${SERVERS[@]}" 2>/dev/null; wait 2>/dev/null' EXIT

# serve NAME PORT DATABASE WSGI_APP: a fresh database, migrated, a key, gunicorn; a target.
serve() {
    local url="postgresql+psycopg://postgres@127.0.0.1:5432/$3"
    psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $3 WITH (FORCE)" \
        -c "CREATE DATABASE $3"
    DATABASE_URL=$url .venv/bin/alembic upgrade head
    local key
    key=$(DATABASE_URL=$url .venv/bin/flask --app wsgi api-key create --all-organizations \
        --name bench | tail -n 1)
    DATABASE_URL=$url .venv/bin/gunicorn -c "$SHARED_BENCH/gunicorn.conf.py" \
        --worker-class "$WORKER_CLASS" --bind "127.0.0.1:$2" --pythonpath .,bench "$4" \
        2>"build/bench-$1.log" &
    SERVERS+=($!)
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$2/healthz" && break; sleep 0.2; done
    TARGETS+=(--target "$1=http://127.0.0.1:$2" --key "$key" --pid "$!" --db "$3")
}

make --quiet .venv/bin/.installed
mkdir -p build  # the servers' logs: build/bench-<target>.log
serve project "$PORT" bench_project wsgi:app
if [ "${1:-}" = --with-idempotency-key ]; then
    shift
    serve project_idem "$((PORT + 1))" bench_project_idem idempotency_key_wsgi:app
fi
"$SHARED_BENCH/run.sh" "${TARGETS[@]}" "$@"

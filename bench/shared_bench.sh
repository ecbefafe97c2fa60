#!/usr/bin/env bash
# Run ../shared/bench (floor, Django REST framework peer, this project) in one go:
# the project gets its own fresh PostgreSQL database `bench_project`, its migrations, an
# all-organizations key, and gunicorn with the shared settings. Extra arguments go to the
# shared driver, e.g. `bench/shared_bench.sh --duration 5 --endpoints get_one,list`.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED_BENCH=${SHARED_BENCH:-../shared/bench}
PORT=${BENCH_PORT:-8077}
DB=bench_project
export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:5432/$DB"

make --quiet .venv/bin/.installed
psql -qh 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
.venv/bin/alembic upgrade head
KEY=$(.venv/bin/flask --app wsgi api-key create --all-organizations --name bench | tail -n 1)

.venv/bin/gunicorn -c "$SHARED_BENCH/gunicorn.conf.py" --bind "127.0.0.1:$PORT" wsgi:app &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/openapi.json" && break; sleep 0.2; done

"$SHARED_BENCH/run.sh" --target "project=http://127.0.0.1:$PORT" --key "$KEY" \
    --pid "$SERVER" --db "$DB" "$@"

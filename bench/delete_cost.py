"""DELETE, which ../shared/bench does not time: this service beside the shared bench's floor,
with the shared gunicorn settings (the service with its own gevent workers, as
bench/shared_bench.sh runs it), each on a fresh PostgreSQL database of its own:

    .venv/bin/python bench/delete_cost.py [--seconds 10] [--rounds 2]

Each database gets 200,000 messages in bulk SQL, every one with 3 attachment ids and 6
key/value objects (the service's through bench/seed_scale.sql); wrk then deletes them one
after the other, each a message never deleted before (16 connections), the two targets in
turn, every round. It prints the best round's requests a second of each and their ratio.
Needs the shared bench set up (../shared/bench/setup.sh, which bench/shared_bench.sh runs).
"""
import argparse
import hashlib
import os
import re
import secrets
import signal
import subprocess
import tempfile
from pathlib import Path

from databases import fresh_database
from list_memory import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "bench"
SHARED_VENV = Path(os.environ.get("BENCH_HOME", Path.home() / ".cache/messenger-bench")) / "venv"
SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
SMS = "/ux/common/messenger/sms/"
MESSAGES = 200_000
LUA = """
local ids, i, step
function init(args)
  ids, i, step = {}, tonumber(args[2]), tonumber(args[3])
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
end
function request()
  i = i + step
  return wrk.format("DELETE", "%s" .. ids[i] .. "/", {["Authorization"] = "%s"})
end
"""
FLOOR_SEED = """
INSERT INTO message (id, event_time, organization, creation_time, last_update_time, ref_id)
SELECT lpad(to_hex(1700000000 + i), 8, '0') || lpad(to_hex(i), 16, '0'), now(), 'org-1',
       now(), now(), 'ref-' || i FROM generate_series(1, {n}) AS i;
INSERT INTO message_attachment (message_id, position, attachment_id)
SELECT id, k, 'att-' || k FROM message, generate_series(0, 2) AS k;
INSERT INTO message_kv (message_id, channel, position, keys, value, queryparam)
SELECT id, 'read_map', k, 'user-' || k, 'read', false FROM message, generate_series(0, 1) AS k
UNION ALL
SELECT id, channel, 0, 'to', 'v', false
FROM message, unnest(ARRAY['email', 'sms', 'api', 'beep']) AS channel;
"""


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg", "postgresql")


def start_floor(port: int, key: str) -> subprocess.Popen:
    url = fresh_database(SERVER, "bench_floor_delete")
    subprocess.run(["psql", "-qX", "-v", "ON_ERROR_STOP=1", "-f", str(SHARED / "floor/schema.sql"),
                    libpq(url)], check=True, capture_output=True)
    subprocess.run(["psql", "-qX", "-v", "ON_ERROR_STOP=1", "-c", FLOOR_SEED.format(n=MESSAGES),
                    "-c", "VACUUM ANALYZE", libpq(url)], check=True, capture_output=True)
    env = {**os.environ, "FLOOR_DSN": libpq(url),
           "API_KEY_SHA256": hashlib.sha256(key.encode()).hexdigest()}
    return subprocess.Popen([str(SHARED_VENV / "bin/gunicorn"), "-c",
                             str(SHARED / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
                             "app:app"], cwd=SHARED / "floor", env=env,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def start_project(port: int) -> tuple[subprocess.Popen, str]:
    url = fresh_database(SERVER, "bench_project_delete")
    env = {**os.environ, "DATABASE_URL": url}
    bin_dir = ROOT / ".venv/bin"
    subprocess.run([bin_dir / "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True,
                   capture_output=True)
    subprocess.run([bin_dir / "flask", "--app", "wsgi", "partitions"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    subprocess.run(["psql", "-qX", "-v", f"n={MESSAGES}", "-v", "step=1", "-f",
                    str(ROOT / "bench/seed_scale.sql"), libpq(url)], check=True,
                   capture_output=True)
    made = subprocess.run([bin_dir / "flask", "--app", "wsgi", "api-key", "create",
                           "--all-organizations", "--name", "bench"], cwd=ROOT, env=env,
                          check=True, capture_output=True, text=True)
    key = made.stdout.strip().splitlines()[-1]
    server = subprocess.Popen([bin_dir / "gunicorn", "-c", str(SHARED / "gunicorn.conf.py"),
                               "--worker-class", "gevent", "--bind", f"127.0.0.1:{port}",
                               "wsgi:app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    return server, key


def ids_of(url: str, table: str) -> list[str]:
    done = subprocess.run(["psql", "-qAtX", "-c", f"SELECT id FROM {table} ORDER BY id",
                           libpq(url)], check=True, capture_output=True, text=True)
    return done.stdout.split()


def delete_run(base: str, key: str, ids_file: str, start: int, seconds: float,
               directory: str) -> float:
    """wrk deleting ids[start + 1], ids[start + 2], ... for `seconds`: requests a second."""
    script = Path(directory) / "delete.lua"
    script.write_text(LUA % (SMS, key))
    done = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds:g}s", "-s", str(script), base,
                           "--", ids_file, str(start), "1"],
                          check=True, capture_output=True, text=True)
    if "Non-2xx" in done.stdout:
        raise SystemExit(f"{base}: not every DELETE succeeded (too few messages?)\n{done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    floor_key = secrets.token_hex(16)
    floor = start_floor(8111, floor_key)
    project, project_key = start_project(8112)
    servers = [floor, project]
    try:
        targets = {"floor": ("http://127.0.0.1:8111", floor_key, "bench_floor_delete", "message"),
                   "project": ("http://127.0.0.1:8112", project_key, "bench_project_delete",
                               "messages")}
        best: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as directory:
            files, used = {}, {}
            for name, (base, _, database, table) in targets.items():
                wait_until_serving(base)
                files[name] = f"{directory}/{name}.ids"
                Path(files[name]).write_text("\n".join(ids_of(f"{SERVER}/{database}", table)))
                used[name] = 0
            for _ in range(args.rounds):
                for name, (base, key, _, _) in targets.items():
                    rate = delete_run(base, key, files[name], used[name], args.seconds, directory)
                    used[name] += int(rate * args.seconds * 1.2) + 1000  # past what wrk took
                    best[name] = max(best.get(name, 0), rate)
                    print(f"{name}: {rate:.0f} DELETE/s", flush=True)
        print(f"best of {args.rounds}: floor {best['floor']:.0f}/s, project "
              f"{best['project']:.0f}/s: {best['project'] / best['floor']:.2f}x the floor")
    finally:
        for server in servers:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

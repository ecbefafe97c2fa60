"""What `make run` installs: the service's dependencies (requirements.txt), enough to migrate
and serve, and none of the test tools (requirements-test.txt), which `make test` adds."""
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import free_port, wait_until_serving
from messenger_app.config import PROJECT_ROOT


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(file_name: str) -> set[str]:
    names = set()
    for line in (PROJECT_ROOT / file_name).read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement and not requirement.startswith("-"):  # not `-r requirements.txt`
            names.add(normalized(re.split(r"[\[=<>~!; ]", requirement)[0]))
    return names


def installed(venv: Path) -> set[str]:
    listing = subprocess.run([venv / "bin" / "pip", "list", "--format=json"], check=True,
                             capture_output=True, text=True).stdout
    return {normalized(package["name"]) for package in json.loads(listing)}


def test_make_run_installs_the_runtime_alone_and_serves(tmp_path):
    venv = tmp_path / "venv"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'messenger.db'}"}
    make = ["make", f"VENV={venv}", f"PYTHON={sys.executable}"]
    subprocess.run([*make, "migrate"], cwd=PROJECT_ROOT, env=env, check=True,
                   capture_output=True)  # run's first step: the virtualenv, the migrations

    packages = installed(venv)
    assert requirement_names("requirements.txt") <= packages
    test_tools = requirement_names("requirements-test.txt")
    assert test_tools and not test_tools & packages, test_tools & packages

    port = free_port()
    with open(tmp_path / "make-run.log", "w") as log:
        run = subprocess.Popen([*make, "run", f"PORT={port}"], cwd=PROJECT_ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", run)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200  # migrated, and the database answers
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(timeout=30)
    assert re.search(r"^msk_\S+$", (tmp_path / "make-run.log").read_text(), re.M)

"""/openapi.json as the ecosystem's own tools take it: Redocly's and Spectral's linters
(their recommended rules; redocly.yaml and .spectral.yaml turn off only the trailing-slash
rule) find no error.

The tools are pinned in tools/package-lock.json and `make test` installs them (npm ci).
Without them these tests are skipped, except with CI set, where they fail."""
import json
import os
import subprocess

import pytest

from messenger_app import create_app
from messenger_app.config import PROJECT_ROOT

TOOLS = PROJECT_ROOT / "tools" / "node_modules" / ".bin"
QUIET = {"REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true", "NO_COLOR": "1"}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        message = f"{name} is not installed in tools/ (`make test` installs it with npm ci)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return str(path)


def run(*command: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env={**os.environ, **QUIET}, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def document(tmp_path_factory):
    """The document's file (it does not depend on the database)."""
    app = create_app({"DATABASE_URL": "sqlite://", "LOG_REQUESTS": False})
    path = tmp_path_factory.mktemp("openapi") / "openapi.json"
    path.write_bytes(app.test_client().get("/openapi.json").data)
    return path


def test_redocly_finds_no_error(document):
    linted = run(tool("redocly"), "lint", str(document), "--format=json")
    report = json.loads(linted.stdout)
    errors = [p for p in report["problems"] if p["severity"] == "error"]

    assert errors == [] and report["totals"]["errors"] == 0
    assert linted.returncode == 0, linted.stderr


def test_spectral_finds_no_error(document):
    linted = run(tool("spectral"), "lint", str(document), "--ruleset", ".spectral.yaml",
                 "--format", "json", "--fail-severity", "error")
    results = json.loads(linted.stdout)

    assert [r for r in results if r["severity"] == 0] == []  # 0: error
    assert linted.returncode == 0, linted.stderr

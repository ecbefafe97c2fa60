"""The code's own checks, run with the tests: ruff and mypy over messenger_app/ (their
settings are in pyproject.toml), and the direction of imports between its modules."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
PACKAGE = PROJECT / "messenger_app"

# Modules below the HTTP layer: they know nothing of requests, responses or the API.
DATA_LAYER = {"config", "models", "db", "replicas", "message_json", "outbox", "queries",
              "partitions"}
HTTP_PACKAGES = {"flask_smorest", "werkzeug", "webargs", "flask_cors", "gunicorn", "marshmallow"}
# Each data-layer module may import only these of the package's (a one-way graph:
# views -> queries -> outbox -> message_json -> models, and db -> replicas).
ALLOWED_IMPORTS = {
    "config": set(),
    "models": set(),
    "db": {"replicas"},
    "replicas": set(),
    "message_json": {"models"},
    "outbox": {"message_json", "models"},
    "queries": {"db", "message_json", "models", "outbox"},
    "partitions": set(),
}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """The package's modules and the outside packages that `module` imports."""
    inner, outer = set(), set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            inner |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            outer.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            outer |= {alias.name.split(".")[0] for alias in node.names}
    return inner, outer


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *command], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)


def test_ruff_finds_nothing():
    checked = run("ruff", "check", "--no-cache", "messenger_app")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_finds_nothing():
    checked = run("mypy", "--no-incremental")
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("module", sorted(DATA_LAYER))
def test_the_data_layer_imports_one_way_and_nothing_of_http(module):
    inner, outer = imports_of(module)

    assert inner <= ALLOWED_IMPORTS[module]
    assert not outer & HTTP_PACKAGES
    if module != "db":  # the request's connection lives in flask.g
        assert "flask" not in outer


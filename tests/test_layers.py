"""The layers are enforced: ``lint-imports`` (run by scripts/test) passes on the tree, and
fails, naming the import, when one crosses a layer. Each crossing is made by hand on a copy
of the packages, as a careless change would."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("layers")
    for package in ("api", "workers"):
        shutil.copytree(
            ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract(pristine: Path) -> None:
    result = lint(pristine)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # The domain reaching up into a transport.
        (
            "api/domain/passwords.py",
            "from api.http import routes",
            "api.domain.passwords -> api.http.routes",
        ),
        # A repository reaching up into the domain.
        (
            "api/repositories/users.py",
            "from api.domain import auth",
            "api.repositories.users -> api.domain.auth",
        ),
        # Plumbing reaching up into a repository.
        (
            "api/settings.py",
            "from api.repositories import events",
            "api.settings -> api.repositories.events",
        ),
        # A worker using the HTTP layer.
        ("workers/tasks.py", "from api.http import errors", "workers.tasks -> api.http.errors"),
        # The app importing the task queue (the relay publishes, not the API).
        ("api/http/app.py", "import workers.celery_app", "api.http.app -> workers.celery_app"),
        # The domain importing the web framework.
        ("api/domain/users.py", "import litestar", "api.domain.users -> litestar"),
    ],
    ids=[
        "domain-to-http",
        "repository-to-domain",
        "plumbing-to-repository",
        "worker-to-http",
        "app-to-celery",
        "domain-to-litestar",
    ],
)
def test_an_import_across_the_layers_breaks_a_contract(
    pristine: Path, tmp_path: Path, module: str, line: str, broken: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(pristine, tree)
    source = tree / module
    text = source.read_text()
    # After the module's docstring and ``from __future__``: an ordinary import line.
    marker = "from __future__ import annotations\n"
    assert marker in text, module
    source.write_text(text.replace(marker, f"{marker}\n{line}  # crossing by hand\n", 1))

    result = lint(tree)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    assert broken in result.stdout, result.stdout

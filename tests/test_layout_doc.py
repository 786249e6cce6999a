"""The README's layout table matches the tree: every path it names exists, and every module
of ``api/`` and ``workers/`` is named in it (so a new module comes with its line)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def layout_rows() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0]] = cells[1]
    return rows


def test_every_path_in_the_layout_exists() -> None:
    for paths in layout_rows():
        for path in re.findall(r"`([^`]+)`", paths):
            if "*" in path:
                assert list(ROOT.glob(path)), path
            else:
                assert (ROOT / path).exists(), path


def test_every_module_is_in_the_layout() -> None:
    rows = layout_rows()
    packages = ("api", "api/http", "api/rpc", "api/domain", "api/repositories", "workers")
    for package in packages:
        if package == "api":
            entry_points = "`api/main.py`, `api/serve.py`, `api/cli.py`"
            row = rows["`api/*.py`"] + entry_points + rows[entry_points] + "`api/wire.py`"
        else:
            row = rows[f"`{package}/`"]
        for module in sorted((ROOT / package).glob("*.py")):
            if module.stem == "__init__":
                continue
            name = module.name if package in ("api/http", "api/rpc") else module.stem
            assert f"`{name}`" in row or f"`api/{module.name}`" in row, (package, module.name)

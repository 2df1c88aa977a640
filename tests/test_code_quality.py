"""The project's own rules: ruff, mypy --strict on bot/, and bot/'s one-way package graph (which also keeps
handlers and slack_bolt out of bot/)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layered,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layered["layers"] for name in layer.replace(":", "|").split("|")]


def test_package_graph_is_one_way() -> None:
    """import-linter checks pyproject's contracts: each layer of bot/ imports only the layers below it
    (so no package imports one that imports it), and bot/ never imports handlers/ or slack_bolt."""
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_part_of_bot_has_a_layer() -> None:
    """A new package or top-level module must take its place in the graph, not sit outside it; the top
    level holds only what every package shares, and the composition root."""
    parts = {p.stem for p in (ROOT / "bot").iterdir() if p.suffix == ".py" and p.stem != "__init__"}
    packages = {p.name for p in (ROOT / "bot").iterdir() if (p / "__init__.py").exists()}
    assert parts | packages == set(_layers())
    assert len(parts) <= 6, sorted(parts)


def test_ruff_lint_and_format() -> None:
    lint = run(str(BIN / "ruff"), "check", ".")
    assert lint.returncode == 0, lint.stdout
    fmt = run(str(BIN / "ruff"), "format", "--check", ".")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict_on_bot() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout

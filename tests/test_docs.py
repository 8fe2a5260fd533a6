"""The documentation: the site builds with ``mkdocs build --strict`` (links, anchors, the API reference read
from the docstrings), the command-line reference is what the parser gives today, and the README's links
into docs/ lead somewhere. A few seconds; the site build is skipped where the docs tools are not installed
(``pip install -r docs/requirements.txt``; ``make test`` installs them)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "scripts" / "gen_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date():
    generator = _generator()
    committed = generator.DEFAULT_OUT.read_text()
    assert committed == generator.generate(), (
        "docs/reference/cli.md differs from the pipeline command's parser: run `make docs` "
        "(or python scripts/gen_cli_reference.py) and commit the result")


def test_cli_reference_lists_every_option():
    """Every option of every sub-command appears in the reference, so it cannot silently leave one out."""
    import argparse

    from voxforge.pipeline.cli import build_parser

    text = (ROOT / "docs" / "reference" / "cli.md").read_text()
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"## pipeline {name}" in text
        section = text.split(f"## pipeline {name}\n", 1)[1].split("\n## pipeline ", 1)[0]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in section, f"{flag} of pipeline {name} is missing from docs/reference/cli.md"


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file()
    assert "--max-texture-pixels" in (site / "reference" / "cli" / "index.html").read_text()
    api = (site / "reference" / "api" / "loaders" / "index.html").read_text()
    assert "ShardDataset" in api and "set_epoch" in api  # mkdocstrings rendered the docstrings
    assert ":class:`" not in api  # Sphinx roles became code (scripts/griffe_sphinx_roles.py)


def test_readme_links_into_the_docs_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(((?:docs/)[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets, "the README links into docs/"
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing, missing


def test_the_readme_picture_is_small():
    picture = ROOT / "docs" / "assets" / "contact_sheet.png"
    assert picture.is_file() and picture.stat().st_size < 300_000

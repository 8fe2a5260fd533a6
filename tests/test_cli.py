"""The `pipeline` command: instant help, clear errors, inspect output."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import small_config

from voxforge.pipeline.cli import main


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from voxforge.pipeline.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('ray', 'trimesh', 'pyrender', 'torch', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_unknown_category_is_a_clear_error_before_work(tmp_path, capsys):
    assert main(["run", "procedural", "--categories", "chiar", "--out", str(tmp_path / "out")]) == 2
    assert "did you mean chair" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "procedural", "--limit", "1", "--out", str(blocker / "out")]) == 2
    assert "cannot write" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_prints_counts_and_writes_a_contact_sheet(tmp_path, ray_local, capsys):
    from PIL import Image

    from voxforge.pipeline.run import run

    run(small_config(tmp_path, limit=3))
    assert main(["inspect", str(tmp_path), "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "failed: 0" in out
    with Image.open(tmp_path / "contact_sheet.png") as sheet:
        assert sheet.height >= 3 * 127 and sheet.width > 6 * 127

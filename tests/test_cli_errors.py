"""Every subcommand, given inputs a user can get wrong: one or two lines on stderr, exit status 2, no
traceback, and the output location exactly as it was."""

from __future__ import annotations

import pytest

from voxforge.pipeline.cli import main


def snapshot(folder):
    """Every path under ``folder`` with its bytes (None: the folder does not exist)."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


@pytest.fixture
def places(tmp_path):
    """A missing path, a plain file, a folder of someone else's files, and an image."""
    (tmp_path / "notes.txt").write_text("mine")
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("\\documentclass{article}")
    return {"missing": tmp_path / "missing", "file": tmp_path / "notes.txt", "other": other,
            "new": tmp_path / "new"}


CASES = {
    "run: backgrounds folder missing": (["run", "procedural", "--limit", "2", "--backgrounds", "{missing}",
                                         "--out", "{new}"], "new", "--backgrounds"),
    "run: out holds someone else's files": (["run", "procedural", "--limit", "2", "--out", "{other}"], "other",
                                            "is not a voxforge dataset"),
    "run: out is a file": (["run", "procedural", "--limit", "2", "--out", "{file}"], "file", "is a file"),
    "run: unknown category": (["run", "procedural", "--categories", "spaceship", "--out", "{new}"], "new",
                              "spaceship"),
    "run: a file type no reader reads": (["run", "objaverse-xl", "--file-types", "obj,zzz", "--cache", "{new}",
                                          "--out", "{new}"], "new", "cannot read zzz"),
    "run: unknown preset": (["run", "procedural", "--preset", "shapenet", "--out", "{new}"], "new", "--preset"),
    "run: malformed mirror": (["run", "objaverse", "--mirror", "hf", "--out", "{new}"], "new", "PREFIX=URL"),
    "run: unknown renderer": (["run", "procedural", "--renderer", "blender-cyles", "--out", "{new}"], "new",
                              "unknown --renderer 'blender-cyles'"),
    "run: denoise with pyrender": (["run", "procedural", "--denoise", "--out", "{new}"], "new", "--denoise"),
    "run: no Cycles samples": (["run", "procedural", "--renderer", "blender", "--cycles-samples", "0",
                                "--out", "{new}"], "new", "--cycles-samples"),
    "inspect: no dataset": (["inspect", "{missing}"], "missing", "no such folder"),
    "inspect: not a dataset": (["inspect", "{other}"], "other", "not a voxforge dataset"),
    "export: out is a file": (["export", "{other}", "--out", "{file}"], "file", "is a file"),
    "export: out holds files": (["export", "{missing}", "--out", "{other}"], "other", "--overwrite"),
    "export: no dataset": (["export", "{missing}", "--out", "{new}"], "new", "missing"),
    "train: data missing": (["train", "--data", "{missing}", "--out", "{new}", "--iterations", "1"], "new",
                            "--data"),
    "train: data missing, overwrite asked": (["train", "--data", "{missing}", "--out", "{other}", "--overwrite"],
                                             "other", "--data"),
    "train: unknown architecture": (["train", "--data", "{other}", "--arch", "nope", "--out", "{new}"], "new",
                                    "--arch"),
    "train: not a number": (["train", "--data", "{other}", "--out", "{new}", "--iterations", "many"], "new",
                            "--iterations"),
    "eval: run missing": (["eval", "{missing}", "--data", "{other}"], "other", "no such folder"),
    "predict: run missing": (["predict", "{missing}", "{file}", "--out", "{new}"], "new", "missing"),
    "publish: dataset missing": (["publish", "{missing}", "--to", "{new}"], "new", "missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_and_touches_nothing(case, places, capsys):
    argv, watched, said = CASES[case]
    before = snapshot(places[watched])
    try:
        code = main([part.format(**places) for part in argv])
    except SystemExit as stop:  # argparse's own checks exit from inside main
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err
    assert said in err, err
    assert snapshot(places[watched]) == before


def test_the_renderer_names_the_config_accepts_are_the_registered_ones():
    from voxforge.pipeline.config import RENDERER_NAMES
    from voxforge.renderers import RENDERERS

    assert sorted(RENDERER_NAMES) == sorted(RENDERERS)


def test_version(capsys):
    from voxforge import __version__

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"pipeline (voxforge) {__version__}"

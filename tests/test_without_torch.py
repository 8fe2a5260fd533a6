"""The core install (no ``train`` extra) builds, inspects, exports and publishes datasets without PyTorch,
and the commands that need it say how to install it. Checked in a child process whose ``import torch``
fails, as it does where torch is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from inprocess_samples import write_dataset
from voxforge.pipeline.cli import main
from voxforge.pipeline.config import RunConfig
import voxforge.pipeline.run, voxforge.pipeline.worker, voxforge.pipeline.stages  # what a run's workers import
import voxforge.renderers.pyrender_egl, voxforge.pipeline.sources.procedural, voxforge.loaders

root = Path(sys.argv[1])
data = write_dataset(root / "data", RunConfig(limit=3, views=2, size=32, points=64, out=str(root / "data")),
                     splits=("train", "val"))
info = json.loads((data / "dataset.json").read_text())  # the shard lists a pipeline run records
info["counts"]["shards"] = {s: sorted(f"{s}/{p.name}" for p in (data / s).glob("shard-*.tar")) for s in ("train", "val", "test")}
(data / "dataset.json").write_text(json.dumps(info))
codes = {
    "inspect": main(["inspect", str(data), "--sheet", str(root / "sheet.png")]),
    "export parquet": main(["export", str(data), "--layout", "parquet", "--out", str(root / "pq")]),
    "publish": main(["publish", str(data), "--to", str(root / "published"), "--no-progress"]),
    "export r2n2": main(["export", str(data), "--layout", "r2n2", "--out", str(root / "r2")]),
    "train": main(["train", "--data", str(data), "--out", str(root / "run")]),
    "eval": main(["eval", str(root / "run"), "--data", str(data)]),
}
print(json.dumps({"codes": codes, "torch_imported": "torch" in sys.modules}))
"""


def test_datasets_are_built_and_exported_without_torch(tmp_path):
    hidden = tmp_path / "hidden"
    (hidden / "torch").mkdir(parents=True)
    attempts = tmp_path / "torch-imports"
    (hidden / "torch" / "__init__.py").write_text(  # notes each attempt, then fails as a missing torch does
        f"open({str(attempts)!r}, 'a').write('x')\nraise ImportError(\"No module named 'torch'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(Path(__file__).parent)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["codes"] == {"inspect": 0, "export parquet": 0, "export r2n2": 0, "publish": 0,
                            "train": 2, "eval": 2}
    assert not out["torch_imported"] and attempts.read_text() == "xx"  # tried by train and eval only
    assert "error: pipeline train needs PyTorch, which is not installed in this environment; install the train " \
           f"extra, from the voxforge folder: {sys.executable} -m pip install -e '.[train]'" in result.stderr
    assert "Traceback" not in result.stderr

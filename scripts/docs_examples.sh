#!/usr/bin/env bash
# The commands whose output the README and the documentation show, section by section. Every output
# pasted into the docs comes from a run of this script (the page says when and on what machine); after a
# change that alters what a command prints, run the section again and paste its output.
#
#   scripts/docs_examples.sh SECTION...      (no section: the fast ones, errors and sheet)
#
# Sections (time on the 2-core development machine):
#   errors      the mistakes of docs/troubleshooting.md, each answered before any work (about 30 s)
#   sheet       a 12-object dataset and its contact sheet, copied to docs/assets/contact_sheet.png (20 s)
#   demo        `make demo`'s two commands (60 objects; 20 s)
#   softras     --preset softras and `export --layout softras` (docs/presets.md; 30 s)
#   r2n2        train / eval / predict on the 7 real 3D-R2N2 objects in ../shared/data/r2n2 (docs/training.md; 3 min)
#   pointcloud  --preset pointcloud, train --arch reconstnet, eval (docs/training.md; 3 min)
#   meshes      --preset softras, train --arch softras, eval, predict (docs/training.md; 2 min)
#   blender     the Blender renderer on procedural objects and ../shared/data/meshes (docs/rendering.md; 2 min)
#   publish     a small dataset published to a folder and a .zip bundle (docs/publishing.md; 30 s)
#
# The download sources and `publish --to hf://` need the Hub and the other hosts; their outputs in the docs
# were made against the test suite's loopback stand-ins (tests/http_fixtures.py, tests/hub_standin.py, set
# up as tests/test_remote_sources.py and tests/test_hub_publish.py do), with the stand-in's address
# replaced by the real one.
#
# Outputs go to $DOCS_EXAMPLES_DIR (default /tmp/voxforge-docs), which is emptied first; the commands run
# there, so the paths they print are short. Ray keeps its files under $DOCS_EXAMPLES_DIR/tmp.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${DOCS_EXAMPLES_DIR:-/tmp/voxforge-docs}"
SHARED="$ROOT/../shared/data"
export PATH="$ROOT/.venv/bin:$PATH"
export TMPDIR="$WORK/tmp" RAY_ADDRESS=local  # a Ray of its own, never one another program started here
rm -rf "$WORK" && mkdir -p "$WORK/tmp" && cd "$WORK" || exit 1

show() {  # print the command as the docs show it, then run it (stdout and stderr together)
  echo "\$ $*"
  "$@" 2>&1
  local status=$?
  [ "$status" -eq 0 ] || echo "(exit status $status)"
}

errors() {
  mkdir -p other runs/r1 && echo mine > notes.txt && echo "\\documentclass{article}" > other/thesis.tex
  touch runs/r1/checkpoint.pt
  show pipeline run procedural --categories spaceship --out data/new
  show pipeline run local --out data/new
  show pipeline run local --path meshes --out data/new
  show pipeline run procedural --limit 2 --backgrounds VOC2007/JPEGImages --out data/new
  show pipeline run procedural --limit 2 --out notes.txt
  show pipeline run procedural --limit 2 --out other
  show pipeline run objaverse-xl --file-types obj,zzz --out data/new
  show pipeline run objaverse --mirror https://example.org --out data/new
  show pipeline run procedural --preset shapenet
  show pipeline run procedural --limit 2 --out gs://my-bucket/chairs
  show pipeline run procedural --limit 2 --out /proc/chairs
  show pipeline run procedural --limit 2 --out http://host/chairs
  show env PYOPENGL_PLATFORM=glx pipeline run procedural --limit 2 --out data/nogl --no-progress
  show pipeline run procedural --limit 2 --views 4 --out data/small --no-progress
  show pipeline run procedural --limit 2 --views 8 --out data/small
  flock data/small/.voxforge/lock sleep 20 & sleep 1
  show pipeline run procedural --limit 2 --views 4 --out data/small
  kill %1 2>/dev/null; wait 2>/dev/null
  show pipeline inspect data/missing
  show pipeline inspect other
  show pipeline export data/small --layout r2n2 --out other
  show pipeline train --data data/missing --out runs/r2
  show pipeline train --data data/small --arch res3d-lstm-9 --out runs/r2
  show pipeline train --data data/small --out runs/r1
  show pipeline eval runs/missing --data data/small
  show pipeline publish data/small --to other
  show env HF_HOME="$WORK/no-login" HF_TOKEN= pipeline publish data/small --to hf://datasets/you/small
  show pipeline publish data/small --to hf://you/small
}

sheet() {
  show pipeline run procedural --limit 12 --views 8 --out demo --no-progress
  show pipeline inspect demo
  cp demo/contact_sheet.png "$ROOT/docs/assets/contact_sheet.png"
}

demo() {
  show pipeline run procedural --limit 60 --out data/demo
  show pipeline inspect data/demo
}

softras() {
  show pipeline run procedural --preset softras --limit 12 --out srdata --workers 2 --no-progress
  show pipeline export srdata --layout softras --out srexport
  show ls srexport
}

r2n2() {
  show pipeline train --data "$SHARED/r2n2" --arch 3d-gru-3 --width 0.125 --image-size 64 --batch-norm \
    --iterations 300 --batch-size 7 --views 1-3 --lr 3e-3 --lr-steps 225 --out run_r2n2 --device cpu --no-progress
  show pipeline eval run_r2n2 --data "$SHARED/r2n2" --split all --gallery 4 --device cpu
  show pipeline predict run_r2n2 "$SHARED"/r2n2/ShapeNetRendering/02958343/piaomz-kache/rendering/{00,07}.png \
    --out pred
}

pointcloud() {
  show pipeline run procedural --preset pointcloud --limit 24 --out pcdata --workers 2
  show pipeline train --arch reconstnet --data pcdata --out run_cli --iterations 30 --batch-size 8 --width 0.25 \
    --workers 2 --lr 1e-3
  show pipeline eval run_cli --data pcdata --split test
  python -c 'import sys; from PIL import Image; from voxforge.loaders import open_dataset
Image.fromarray(next(iter(open_dataset("pcdata", "test")))["images"][0]).save("pc_view.png")'
  show pipeline predict run_cli pc_view.png --out pc_pred
}

meshes() {
  show pipeline run procedural --preset softras --limit 24 --out srdata --workers 2 --no-progress
  show pipeline train --arch softras --data srdata --out run_softras --iterations 100 --batch-size 8 --width 0.25 \
    --lr 1e-3 --workers 2 --no-progress
  show pipeline eval run_softras --data srdata --split test
  # an RGBA view of a test object (its mask as alpha), as a user's input image
  python -c "import numpy as np; from PIL import Image; from voxforge.loaders import open_dataset; \
s = next(iter(open_dataset('srdata', 'test'))); \
Image.fromarray(np.dstack([s['images'][3], s['alphas'][3]])).save('car_view3.png')"
  show pipeline predict run_softras car_view3.png
}

blender() {
  show pipeline run procedural --renderer blender --limit 4 --out data/blender_demo
  show pipeline run local --path "$SHARED/meshes" --renderer blender-workbench --out data/meshes_wb
}

publish() {
  show pipeline run procedural --limit 12 --views 4 --points 512 --shard-size 2 --out data/small --no-progress
  show pipeline publish data/small --to published/small
  show pipeline publish data/small --to published/small.zip
  show ls published/small published/small/data
  show python -c 'import json; from datasets import load_dataset
data = load_dataset("published/small", split="train")
print(data)
row = data[0]
print(json.loads(row["metadata"])["id"], row["images"][0].size, len(row["images"]), len(row["points"]))'
}

sections=("$@")
[ ${#sections[@]} -gt 0 ] || sections=(errors sheet)
for section in "${sections[@]}"; do
  echo "## $section ($(date -u +%Y-%m-%d), $(nproc) cores)"
  "$section"
done

"""The output location going bad in the middle of a run (disk full, writes refused, folder removed): the
run stops with one line that names the cause and how many objects are safely written (counted from what
is really there), recreates nothing, and the same command resumes once the output is fixed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from conftest import small_config

from voxforge.loaders import open_dataset
from voxforge.pipeline.run import RunError, run


def complete_samples(out: Path) -> int:
    """Samples in the finished shard tars (not ``.partial`` files), read with the standard library."""
    count = 0
    for tar in out.glob("*/shard-*.tar"):
        with tarfile.open(tar) as archive:
            count += sum(member.name.endswith(".json") for member in archive.getmembers())
    return count


def on_first_shard(out: Path, action) -> threading.Thread:
    """Run ``action`` once the run has committed its first shard."""
    def wait() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(out.glob("*/shard-*.tar")):
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _tool(*command: str) -> bool:
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MB tmpfs (needs the right to mount, as root in a container); skipped where it cannot be made."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not _tool("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)):
        pytest.skip("cannot mount a small filesystem here")
    yield mount
    _tool("umount", "-l", str(mount))


def fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as handle:
        try:
            while True:
                handle.write(bytes(1 << 20))
                handle.flush()
        except OSError:
            pass


def refuse_writes(folder: Path, refuse: bool) -> bool:
    """Make every file and folder under ``folder`` unwritable (root: the immutable attribute, since root
    ignores permissions), or writable again."""
    if os.geteuid() == 0:
        return _tool("chattr", "-R", "+i" if refuse else "-i", str(folder))
    return _tool("chmod", "-R", "a-w" if refuse else "u+w", str(folder))


SETTINGS = dict(limit=36, views=4, points=1024, shard_size=2, min_shards=1, split_ratios=(1.0, 0.0, 0.0))


def stopped_with(out: Path, action) -> str:
    thread = on_first_shard(out, action)
    with pytest.raises(RunError) as stopped:
        run(small_config(out, **SETTINGS))
    thread.join()
    message = str(stopped.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def resumed(out: Path) -> None:
    summary = run(small_config(out, **SETTINGS))
    assert summary.ok + summary.skipped == 36
    assert len(list(open_dataset(out, split="train"))) == 36


def test_a_full_disk_stops_the_run_with_the_count_of_safe_objects(small_disk, ray_local):
    out = small_disk / "dataset"
    message = stopped_with(out, lambda: fill(small_disk))
    safe = complete_samples(out)
    assert 0 < safe < 36
    assert re.fullmatch(rf"cannot write (train/shard-\d+\.tar )?to {out}: No space left on device.*; stopped\. "
                        rf"{safe} objects are safely written there .*run the same command to resume", message), message
    (small_disk / "filler").unlink()
    resumed(out)


def test_an_output_that_refuses_writes_stops_the_run(tmp_path, ray_local):
    out = tmp_path / "dataset"
    refused = []
    try:
        message = stopped_with(out, lambda: refused.append(refuse_writes(out, True)))
        if not refused[0]:
            pytest.skip("cannot make a folder unwritable here")
        safe = complete_samples(out)
        assert 0 < safe < 36
        assert "cannot write" in message and str(out) in message
        assert re.search(r": (Operation not permitted|Permission denied).*; stopped\. "
                         rf"{safe} objects are safely written there", message), message
    finally:
        refuse_writes(out, False)
    resumed(out)


def test_an_output_removed_under_the_run_is_not_made_again(tmp_path, ray_local):
    out = tmp_path / "dataset"
    # Renamed away first, then deleted: the folder vanishes at once, as a user's `rm -r` looks to the run
    # once it has finished; a plain rmtree races the run's own writes ("Directory not empty").
    message = stopped_with(out, lambda: shutil.rmtree(out.rename(tmp_path / "removed")))
    assert message.startswith(f"{out} was removed while the run was writing to it; stopped")
    time.sleep(1.0)  # any worker still finishing an object must not bring the folder back
    assert not out.exists()
    resumed(out)

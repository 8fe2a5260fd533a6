"""Training never silently loses or destroys work, for both model families: a run folder holding files is
refused without --resume / --overwrite (and left untouched); SIGTERM, SIGINT, SIGUSR1 and --time-limit stop
at the next iteration boundary with a checkpoint from which --resume continues exactly; timed checkpoints.

Signals are sent from inside the batch stream (when batch N is read) or once metrics.csv shows N rows, so
the stop lands on a known iteration, or on one the checkpoint names, never on a timing race."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from voxforge.models.stopping import Stopper, prepare_run_dir, quiet_worker
from voxforge.models.engine import open_metrics
from voxforge.models.r2n2.train import TrainConfig, array_batches, train
from voxforge.pipeline.cli import main

TESTS = Path(__file__).resolve().parent


class SignalAt:
    """``batches`` that send this process ``number`` while batch ``index`` (0-based) is read: the handler
    runs before that batch's iteration ends, so the run must stop after ``index + 1`` iterations. Keeps the
    wrapped stream's data position (what the checkpoint records)."""

    def __init__(self, batches, index: int, number: int) -> None:
        self.batches, self.index, self.number = batches, index, number

    @property
    def position(self):
        return getattr(self.batches, "position", None)

    def __iter__(self):
        for count, batch in enumerate(self.batches):
            if count == self.index:
                os.kill(os.getpid(), self.number)
            yield batch


def _tiny_views(count: int = 4, views: int = 3, size: int = 32):
    rng = np.random.default_rng(0)
    return (rng.integers(0, 255, size=(count, views, size, size, 3), dtype=np.uint8),
            rng.random((count, 32, 32, 32)) > 0.8)


def _r2n2_config(**changes) -> TrainConfig:
    values = {"arch": "3d-gru-1", "width": 0.125, "image_size": 32, "iterations": 6, "batch_size": 2,
              "views": (1, 3), "lr": 1e-3, "device": "cpu", "checkpoint_every": 10**6, "log_every": 1}
    return TrainConfig(**{**values, **changes})


def _same_weights(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.allclose(value.float(), second[name].float(), atol=1e-6), name


def _checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)


# --- the Stopper on its own -------------------------------------------------------------------------------


def test_stopper_follows_its_clock_for_the_time_limit_and_timed_checkpoints():
    now = [0.0]
    stopper = Stopper(checkpoint_minutes=2, time_limit=5, signals=(), clock=lambda: now[0])
    stream = iter(range(100))
    assert stopper.next_batch(stream) == 0 and not stopper.checkpoint_due(7, every=1000)
    assert stopper.checkpoint_due(1000, every=1000)  # the iteration interval still counts
    now[0] = 120.0
    assert stopper.checkpoint_due(8, every=1000)
    stopper.checkpointed()
    assert not stopper.checkpoint_due(9, every=1000)
    now[0] = 299.0
    assert stopper.next_batch(stream) == 1 and stopper.reason is None
    now[0] = 300.0
    assert stopper.next_batch(stream) is None
    assert next(stream) == 2  # no batch is read once the run is to stop
    assert stopper.reason == "time limit" and stopper.exit_status == 0
    assert stopper.summary(12, 50) == {"reason": "time limit", "exit_status": 0, "iteration": 12, "iterations": 50,
                                       "time_limit": 5.0}
    with pytest.raises(ValueError, match="minutes"):
        Stopper(time_limit=-1)


def test_stopper_restores_the_previous_handlers_and_a_second_ctrl_c_stops_at_once():
    before = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    stopper = Stopper(signals=(signal.SIGTERM, signal.SIGINT, signal.SIGUSR1))
    with pytest.raises(KeyboardInterrupt), stopper:
        os.kill(os.getpid(), signal.SIGINT)  # only sets the flag
        assert stopper.next_batch(iter([1])) is None and stopper.reason == "SIGINT" and stopper.exit_status == 130
        os.kill(os.getpid(), signal.SIGINT)  # the second one raises
        time.sleep(1)  # (the handler runs at once; this is never reached)
    assert {number: signal.getsignal(number) for number in before} == before


def test_dataloader_workers_leave_the_stop_signals_to_the_training_process():
    class Handlers(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return [str(signal.getsignal(n)) for n in (signal.SIGINT, signal.SIGUSR1)] + [
                callable(signal.getsignal(signal.SIGTERM))]

    loader = torch.utils.data.DataLoader(Handlers(), num_workers=1, worker_init_fn=quiet_worker,
                                         collate_fn=lambda items: items[0])
    assert next(iter(loader)) == [str(signal.SIG_IGN), str(signal.SIG_IGN), True]


def test_resumed_metrics_drop_the_rows_logged_after_the_checkpoint(tmp_path):
    """A run killed after its last checkpoint logged rows the resumed run logs again: they go."""
    (tmp_path / "metrics.csv").write_text("iteration,loss\n1,0.5\n2,0.4\n3,0.3\n4,0.2\n")
    handle, writer = open_metrics(tmp_path, 2, ["iteration", "loss"])
    writer.writerow([3, 0.25])
    handle.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["iteration,loss", "1,0.5", "2,0.4", "3,0.25"]
    handle, _ = open_metrics(tmp_path, 0, ["iteration", "loss"])  # a fresh run: a new file, one header
    handle.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["iteration,loss"]


# --- stops inside the trainers ----------------------------------------------------------------------------


def test_sigterm_stops_r2n2_training_at_the_next_iteration_and_resume_is_exact(tmp_path, shared_data):
    """SIGTERM while the 3rd batch is read: a checkpoint at iteration 3 with the loader's data position;
    resuming to 6 gives the losses and weights of an uninterrupted 6-iteration run."""
    from voxforge.models.data import r2n2_batches

    def batches():
        return r2n2_batches(shared_data / "r2n2", 2, (1, 3), image_size=32, workers=0)

    config = _r2n2_config()
    straight = train(config, batches(), tmp_path / "straight", progress=False)
    handler = signal.getsignal(signal.SIGTERM)
    stopped = train(config, SignalAt(batches(), 2, signal.SIGTERM), tmp_path / "run", progress=False)
    assert signal.getsignal(signal.SIGTERM) == handler  # put back
    assert stopped["stopped"] == {"reason": "SIGTERM", "exit_status": 143, "iteration": 3, "iterations": 6,
                                  "time_limit": None}
    assert stopped["iteration"] == 3 and len(stopped["losses"]) == 3
    saved = _checkpoint(tmp_path / "run")
    assert saved["iteration"] == 3 and saved["data_position"] == (0, 3)  # 7 objects in batches of 2: the first epoch's 3 batches
    resumed = train(config, batches(), tmp_path / "run", resume=True, progress=False)
    assert resumed["stopped"] is None and resumed["iteration"] == 6
    assert np.allclose(stopped["losses"] + resumed["losses"], straight["losses"], rtol=1e-5, atol=1e-7)
    _same_weights(_checkpoint(tmp_path / "straight")["model"], _checkpoint(tmp_path / "run")["model"])
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize("number,status", [(signal.SIGINT, 130), (signal.SIGUSR1, 0), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGUSR1", "SIGTERM"])
def test_every_stop_signal_checkpoints_at_the_next_boundary(tmp_path, number, status):
    images, voxels = _tiny_views()
    config = _r2n2_config(iterations=10)
    result = train(config, SignalAt(array_batches(images, voxels, config), 1, number), tmp_path, progress=False)
    assert result["stopped"]["reason"] == signal.Signals(number).name
    assert result["stopped"]["exit_status"] == status and result["iteration"] == 2
    assert _checkpoint(tmp_path)["iteration"] == 2


def test_sigterm_stops_pointcloud_training_and_resume_is_exact(tmp_path):
    """The point-cloud trainer shares the stop: a checkpoint at the boundary, then an exact resume (the
    latent's noise comes from the saved RNG state)."""
    from voxforge.models.reconstnet.train import ReconstNetConfig, train_reconstnet

    def batches():
        generator = torch.Generator().manual_seed(0)
        while True:
            yield {"images": torch.rand(2, 3, 64, 64, generator=generator),
                   "points": torch.rand(2, 64, 3, generator=generator) - 0.5}

    config = ReconstNetConfig(width=0.0625, points=64, latent=8, image_size=64, iterations=5, batch_size=2, lr=1e-3,
                              emd_weight=0.1, device="cpu", checkpoint_every=10**6, log_every=1)
    straight = train_reconstnet(config, batches(), tmp_path / "straight", progress=False)
    stopped = train_reconstnet(config, SignalAt(batches(), 1, signal.SIGTERM), tmp_path / "run", progress=False)
    assert stopped["stopped"]["reason"] == "SIGTERM" and stopped["iteration"] == 2
    assert _checkpoint(tmp_path / "run")["iteration"] == 2
    resumed = train_reconstnet(config, batches(), tmp_path / "run", resume=True, progress=False)
    assert resumed["iteration"] == 5 and resumed["stopped"] is None
    assert np.allclose(stopped["history"]["loss"] + resumed["history"]["loss"], straight["history"]["loss"],
                       rtol=1e-5, atol=1e-7)
    _same_weights(_checkpoint(tmp_path / "straight")["model"], _checkpoint(tmp_path / "run")["model"])
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 6  # one header, 5 iterations


def test_timed_checkpoints_come_between_the_iteration_interval_ones(tmp_path):
    """checkpoint_minutes (here a few nanoseconds) writes a checkpoint after every iteration although the
    iteration interval is a million: read back as each next batch is asked for."""
    images, voxels = _tiny_views()
    config = _r2n2_config(iterations=4, checkpoint_minutes=1e-9)
    seen = []

    def watching(batches):
        for count, batch in enumerate(batches):
            if count:
                seen.append(_checkpoint(tmp_path)["iteration"])
            yield batch

    train(config, watching(array_batches(images, voxels, config)), tmp_path, progress=False)
    assert seen == [1, 2, 3]


# --- through the command ----------------------------------------------------------------------------------


def _cli_train(shared_data, out: Path, iterations: int, *extra: str) -> list[str]:
    return ["train", "--data", str(shared_data / "r2n2"), "--arch", "3d-gru-1", "--width", "0.125",
            "--image-size", "32", "--iterations", str(iterations), "--batch-size", "2", "--views", "1-2",
            "--lr", "1e-3", "--out", str(out), "--device", "cpu", "--workers", "0", "--no-progress",
            "--log-every", "1", "--checkpoint-every", "1000000", *extra]


def test_time_limit_stops_with_a_checkpoint(tmp_path, shared_data, capsys):
    code = main(_cli_train(shared_data, tmp_path / "run", 10**6, "--time-limit", "0.001"))  # 60 ms
    message = capsys.readouterr().err
    assert code == 0, message
    saved = _checkpoint(tmp_path / "run")
    assert 0 <= saved["iteration"] < 10**6
    assert f"stopped by the time limit (0.001 minutes) after iteration {saved['iteration']} of 1000000" in message
    assert "--resume" in message and "Traceback" not in message


def test_sigterm_to_a_training_process_then_resume_matches_an_uninterrupted_run(tmp_path, shared_data):
    """A real process, SIGTERM once metrics.csv shows 3 iterations: it checkpoints at the iteration it is
    in, exits 143 with a message, and resuming to that iteration + 2 equals a straight run of that length."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "voxforge.pipeline.cli",
                                *_cli_train(shared_data, run, 10**6)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if (run / "metrics.csv").exists() and len((run / "metrics.csv").read_text().splitlines()) >= 4:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1][-3000:]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err[-3000:]
    saved = _checkpoint(run)
    stop = saved["iteration"]
    assert stop >= 3 and saved["data_position"] is not None
    assert f"stopped by SIGTERM after iteration {stop} of 1000000: checkpoint in {run / 'checkpoint.pt'}" in err
    assert "--resume" in err and "Traceback" not in err
    assert main(_cli_train(shared_data, run, stop + 2, "--resume")) == 0
    assert main(_cli_train(shared_data, tmp_path / "straight", stop + 2)) == 0
    resumed, straight = _checkpoint(run), _checkpoint(tmp_path / "straight")
    assert resumed["iteration"] == straight["iteration"] == stop + 2
    _same_weights(straight["model"], resumed["model"])
    rows = [row[0] for row in csv.reader((run / "metrics.csv").open())][1:]
    assert rows == [str(i) for i in range(1, stop + 3)]  # each iteration logged once


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_training_into_an_existing_run_is_refused_untouched_and_overwrite_starts_clean(tmp_path, shared_data,
                                                                                        capsys):
    run = tmp_path / "run"
    assert main(_cli_train(shared_data, run, 3)) == 0
    (run / "eval.json").write_text('{"iteration": 3}')
    (run / "gallery.png").write_bytes(b"\x89PNG old")
    (run / "notes.txt").write_text("mine")
    before = _snapshot(run)
    capsys.readouterr()
    for arch in ("3d-gru-1", "reconstnet", "softras"):  # every model family, before anything is read or written
        command = _cli_train(shared_data, run, 2)
        command[command.index("--arch") + 1] = arch
        assert main(command) == 2
        error = capsys.readouterr().err
        assert "--resume" in error and "--overwrite" in error and "Traceback" not in error
        assert len(error.strip().splitlines()) <= 2
        assert _snapshot(run) == before
    with pytest.raises(SystemExit) as exit_info:
        main(_cli_train(shared_data, run, 2, "--resume", "--overwrite"))
    assert exit_info.value.code == 2 and _snapshot(run) == before

    assert main(_cli_train(shared_data, run, 2, "--overwrite")) == 0
    assert "deleted" in capsys.readouterr().err
    assert not (run / "eval.json").exists() and not (run / "gallery.png").exists()
    assert (run / "notes.txt").read_text() == "mine"  # not the run's: kept
    lines = (run / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("iteration") and [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    assert len(list((run / "tensorboard").glob("events.*"))) == 1
    assert _checkpoint(run)["iteration"] == 2


def test_an_empty_or_missing_run_folder_needs_no_flag(tmp_path):
    assert prepare_run_dir(tmp_path / "missing") == ([], [])
    (tmp_path / "empty").mkdir()
    assert prepare_run_dir(tmp_path / "empty") == ([], [])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        prepare_run_dir(tmp_path / "file", overwrite=True)

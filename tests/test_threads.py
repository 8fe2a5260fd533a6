"""Thread defaults of training (voxforge.models.threads): usable CPUs from affinity and cgroup quotas, the
intra-op sizing rule, explicit choices respected, one torch thread per DataLoader worker, the OpenMP wait
policy set before torch loads. No timings here: bench/bench_threads.py measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import SHARED_DATA  # noqa: E402
from voxforge.models import threads  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _cgroup(tmp_path: Path, files: dict[str, str], membership: str) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup tree holding ``files`` and a fake /proc/self/cgroup."""
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text + "\n")
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(membership + "\n")
    return root, proc


def test_cgroup_v2_quota_caps_the_affinity_rounded_down(tmp_path):
    root, proc = _cgroup(tmp_path, {"cgroup.controllers": "cpu io", "cpu.max": "150000 100000"}, "0::/")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    assert threads.usable_cpus(set(range(8)), root, proc) == 1
    root, proc = _cgroup(tmp_path / "b", {"cgroup.controllers": "cpu", "cpu.max": "max 100000"}, "0::/")
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.usable_cpus({0, 1, 2}, root, proc) == 3  # no quota: the affinity mask alone


def test_cgroup_v2_smallest_quota_of_the_process_cgroup_and_its_parents(tmp_path):
    files = {"cgroup.controllers": "cpu", "cpu.max": "max 100000", "kubepods/cpu.max": "200000 100000",
             "kubepods/pod1/cpu.max": "400000 100000"}
    root, proc = _cgroup(tmp_path, files, "0::/kubepods/pod1")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(2.0)
    assert threads.usable_cpus(set(range(16)), root, proc) == 2
    assert threads.usable_cpus({0}, root, proc) == 1  # the affinity can be the smaller one
    # a quota below one CPU still leaves one thread
    root, proc = _cgroup(tmp_path / "small", {"cpu.max": "50000 100000"}, "0::/")
    assert threads.usable_cpus(set(range(4)), root, proc) == 1


def test_cgroup_v1_quota_over_period(tmp_path):
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000",
             "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000",
             "unified/cgroup.procs": ""}
    root, proc = _cgroup(tmp_path, files, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc")
    assert threads.cgroup_cpu_limit(root, proc) == pytest.approx(3.0)
    assert threads.usable_cpus(set(range(8)), root, proc) == 3
    # -1: no quota (this machine's own setup: hybrid v1 + v2, namespace root "/")
    files = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    root, proc = _cgroup(tmp_path / "none", files, "1:cpu:/\n0::/")
    assert threads.cgroup_cpu_limit(root, proc) is None
    assert threads.usable_cpus({0, 1}, root, proc) == 2


def test_unreadable_cgroup_information_means_no_quota(tmp_path):
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "missing_proc") is None
    assert threads.usable_cpus({0, 1, 2, 3}, tmp_path / "missing", tmp_path / "missing_proc") == 4


def test_intra_op_rule_and_explicit_choices():
    assert threads.intra_op_threads(2, 0, environ={}, cpus=8) == 6  # a core per DataLoader worker
    assert threads.intra_op_threads(2, 0, environ={}, cpus=2) == 1  # never below one
    assert threads.intra_op_threads(0, 0, environ={}, cpus=4) == 4
    assert threads.intra_op_threads(1, 0, environ={"LOCAL_WORLD_SIZE": "2"}, cpus=8) == 3  # torchrun: per rank
    assert threads.intra_op_threads(2, 0, environ={"OMP_NUM_THREADS": "3"}, cpus=8) is None  # torch follows it
    assert threads.intra_op_threads(2, 0, environ={"MKL_NUM_THREADS": "3"}, cpus=8) is None
    assert threads.intra_op_threads(2, 5, environ={"OMP_NUM_THREADS": "3"}, cpus=8) == 5  # --threads wins
    assert threads.intra_op_threads(2, -1, environ={}, cpus=8) is None  # torch's own default


def test_training_threads_sets_then_restores_and_respects_omp_num_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda *a, **k: 3)
    with threads.training_threads(loader_workers=1) as chosen:
        assert chosen == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with threads.training_threads(loader_workers=1) as chosen:
        assert chosen == torch.get_num_threads() == before  # left as the user's environment made it
    with threads.training_threads(loader_workers=1, requested=1) as chosen:
        assert chosen == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_quiet_openmp_waits_unless_the_user_chose():
    environ: dict[str, str] = {}
    assert threads.quiet_openmp_waits(environ) and environ == {"OMP_WAIT_POLICY": "PASSIVE"}
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not threads.quiet_openmp_waits(environ) and environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {"GOMP_SPINCOUNT": "10000"}
    assert not threads.quiet_openmp_waits(environ) and "OMP_WAIT_POLICY" not in environ


def test_the_pipeline_command_sets_the_wait_policy_before_torch_is_loaded():
    """libgomp reads OMP_WAIT_POLICY when ``import torch`` loads it: the CLI must set it first."""
    code = ("import os, sys\n"
            "from voxforge.pipeline.cli import build_parser\n"
            "build_parser().parse_args(['train', '--data', 'd', '--out', 'o'])\n"
            "assert 'torch' not in sys.modules, 'torch loaded before the train command runs'\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "PASSIVE"


# The checks below run torch's DataLoader workers and a training loop. They run in a child process: forked
# DataLoader workers and torch's thread pools in the pytest process itself once left a later Ray pipeline run
# in the same session waiting forever (read tasks done, map stage never scheduled).
_CHILD_CHECKS = r"""
import json, signal, sys
from pathlib import Path
import numpy as np
import torch
from voxforge.models import threads

class WorkerState(torch.utils.data.Dataset):
    # each item: the worker's torch threads and whether it ignores SIGINT (quiet_worker's part)
    def __len__(self):
        return 4
    def __getitem__(self, index):
        return torch.get_num_threads(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN

results = {}
before = torch.get_num_threads()
torch.set_num_threads(2)  # a parent with several threads: the workers must not inherit them
loader = torch.utils.data.DataLoader(WorkerState(), batch_size=None, num_workers=2,
                                     worker_init_fn=threads.worker_init)
results["workers"] = [[int(count), bool(ignored)] for count, ignored in loader]
torch.set_num_threads(before)

shared, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
if (shared / "r2n2").is_dir():
    from voxforge.models.data import r2n2_batches
    batches = r2n2_batches(shared / "r2n2", batch_size=2, views=(1, 1), image_size=64, workers=1)
    torch_loaders = [cell.cell_contents for cell in batches._epoch_batches.__closure__
                     if isinstance(cell.cell_contents, torch.utils.data.DataLoader)]
    results["loader"] = {"workers": batches.workers,
                         "worker_init": [l.worker_init_fn is threads.worker_init for l in torch_loaders]}

from voxforge.models.r2n2.train import TrainConfig, array_batches, train
rng = np.random.default_rng(0)
images = rng.integers(0, 255, (2, 2, 64, 64, 3), dtype=np.uint8)
voxels = rng.random((2, 32, 32, 32)) > 0.8
config = TrainConfig(arch="3d-gru-1", width=0.0625, image_size=64, iterations=2, batch_size=2, views=(1, 1),
                     log_every=1, device="cpu", threads=1, checkpoint_minutes=0)
before = torch.get_num_threads()
seen = []
train(config, array_batches(images, voxels, config), run_dir, progress=False,
      on_log=lambda iteration, model: seen.append(torch.get_num_threads()), signals=())
results["train"] = {"during": seen, "restored": torch.get_num_threads() == before}
print("RESULTS " + json.dumps(results))
"""


@pytest.fixture(scope="module")
def child_results(tmp_path_factory) -> dict:
    shared = SHARED_DATA  # the loader check is skipped in the child when absent
    run_dir = tmp_path_factory.mktemp("threads") / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _CHILD_CHECKS, str(shared), str(run_dir)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULTS "))
    return json.loads(line[len("RESULTS "):])


def test_dataloader_workers_get_one_thread_and_quiet_signals(child_results):
    assert child_results["workers"] == [[1, True]] * 4


def test_training_loaders_use_the_worker_init(child_results, shared_data):
    assert child_results["loader"]["workers"] == 1
    assert child_results["loader"]["worker_init"] == [True]


def test_train_uses_the_configured_threads_and_puts_them_back(child_results):
    assert child_results["train"] == {"during": [1, 1], "restored": True}

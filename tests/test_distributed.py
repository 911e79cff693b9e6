"""Under torchrun: each rank's rows, a 2-process store and manifest equal to 1-process ones, a rank killed."""

from __future__ import annotations

import math
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from typer.testing import CliRunner

from prune import distributed
from prune.cli import app
from prune.data import load_dataset
from prune.distributed import World
from prune.errors import PruneError
from prune.features import FeatureConfig, PosteriorConfig, build_store
from prune.training import TrainConfig

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


@pytest.mark.parametrize("n, batch_size, size", [(2000, 300, 2), (2000, 256, 2), (10, 4, 3), (5, 4, 3), (0, 4, 2)])
def test_shards_are_contiguous_whole_batches_covering_every_row(n, batch_size, size):
    shards = [distributed.shard(n, batch_size, World(rank, size)) for rank in range(size)]
    rows = [row for shard, _ in shards for row in shard]
    assert rows == list(range(n))  # contiguous, in rank order, each row once
    assert {steps for _, steps in shards} == {math.ceil(math.ceil(n / batch_size) / size)}
    for shard, steps in shards:
        assert (shard.start % batch_size == 0 or not shard) and len(shard) <= steps * batch_size
        assert len(shard) % batch_size == 0 or shard.stop == n  # only the last batch of all may be short


def test_outside_torchrun_there_is_one_process_and_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.start() == World(0, 1) and distributed.current().main
    assert not dist.is_initialized()
    assert World().from_main(lambda: "made") == "made" and World().gather(3) == [3]


def test_a_timeout_that_is_no_number_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("PRUNE_DIST_TIMEOUT", "soon")
    with pytest.raises(PruneError, match="PRUNE_DIST_TIMEOUT must be a number of seconds, got 'soon'"):
        distributed.start()
    assert not dist.is_initialized()


def test_hutchinson_is_refused_among_several_processes(monkeypatch, tmp_path):
    monkeypatch.setattr(distributed, "current", lambda: World(0, 2))
    data = load_dataset("digits")
    config = FeatureConfig(model="mlp", warmup=TrainConfig(epochs=0), posterior=PosteriorConfig(samples=1, hessian="hutchinson"))
    with pytest.raises(PruneError, match="--hessian hutchinson .* run it in one process"):
        build_store(data, data.train.y, tmp_path / "store.h5", config, seed=0, device=torch.device("cpu"))
    assert not list(tmp_path.iterdir())


def _one_and_two_processes(args: list[str], tmp_path: Path, timeout: int) -> tuple[Path, Path, dict]:
    """``prune ARGS --out one.h5`` in this process, then ``--out two.h5`` under a 2-process torchrun (one
    thread per process); the two paths and torchrun's environment."""
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    result = CliRunner().invoke(app, [*args, "--out", str(one)])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *args, "--out", str(two)],
                   env=env, check=True, timeout=timeout, capture_output=True)
    return one, two, env


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_processes_under_torchrun_write_the_one_process_store_and_manifest(tmp_path, fashion_slice):
    # feature passes in batches of 1,024: rank 0 computes rows 0..1023, rank 1 the short rest; the checkpoint pass
    # at the initial weights, two posterior samples and the point pass. (A warm-up under DDP is close, not equal: below.)
    args = ["features", "--dataset", f"npz:{fashion_slice}", "--warmup-epochs", "0", "--posterior-samples", "2",
            "--batch-size", "300", "--quiet"]
    one, two, env = _one_and_two_processes(args, tmp_path, timeout=120)
    assert two.read_bytes() == one.read_bytes()
    assert not list(tmp_path.glob(".*.partial"))

    select = ["select", "--features", str(two), "--method", "craig", "--fraction", "0.1"]
    result = CliRunner().invoke(app, [*select, "--out", str(tmp_path / "one.json")])
    assert result.exit_code == 0, result.output
    ran = subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *select,
                          "--out", str(tmp_path / "two.json")], env=env, check=True, timeout=120, capture_output=True)
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert ran.stderr.count(b"selected 200 of 2000") == 1  # rank 0 alone writes
    shares = [int(line.split()[2]) for line in ran.stderr.decode().splitlines() if "parts' greedy runs" in line]
    assert len(shares) == 2 and min(shares) > 0  # both ranks ran greedy runs


def _fit_rank(rank: int, size: int, rendezvous: str, out: str) -> None:
    """One rank of a data-parallel ``fit`` (run by torch.multiprocessing.spawn): its weights to ``out``."""
    from prune.models import build_model
    from prune.training import fit

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=size)
    torch.set_num_threads(1)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes)
    weights = torch.linspace(0.5, 2.0, len(data.train))
    fit(model, data.train.x, data.train.y, TrainConfig(epochs=2, batch_size=100), device=torch.device("cpu"), seed=0,
        weights=weights, world=World(rank, size))
    torch.save(model.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


def test_data_parallel_fit_gives_the_one_process_weights(tmp_path):
    """Two ranks, each with its part of every batch (1437 rows in batches of 100: the last batch 37, parts of
    19 and 18), weighted loss: the same weights on both ranks, and the one-process weights to float rounding."""
    import torch.multiprocessing as mp

    from prune.models import build_model
    from prune.training import fit

    mp.spawn(_fit_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "w")), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"w.{rank}") for rank in (0, 1))
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("mlp", data.input_shape, data.num_classes)
    fit(model, data.train.x, data.train.y, TrainConfig(epochs=2, batch_size=100), device=torch.device("cpu"), seed=0,
        weights=torch.linspace(0.5, 2.0, len(data.train)))
    for name, value in model.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), name
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_a_warm_up_under_torchrun_is_data_parallel_and_close_to_one_process(tmp_path, fashion_slice):
    args = ["features", "--dataset", f"npz:{fashion_slice}", "--warmup-epochs", "2", "--posterior-samples", "1",
            "--batch-size", "200", "--quiet"]
    one, two, _ = _one_and_two_processes(args, tmp_path, timeout=180)
    import h5py

    losses = []
    for path in (one, two):
        with h5py.File(path, "r") as f:
            losses.append(torch.from_numpy(f["loss_per_epoch"][:]))
    assert losses[1].shape == (2000, 2) and torch.isfinite(losses[1]).all()
    # both warm-ups learned (the loss fell) to within 10 % of each other; BatchNorm sees half-batches under DDP
    assert (losses[1][:, 1].mean() < 0.8 * losses[1][:, 0].mean()) and (losses[0][:, 1].mean() < 0.8 * losses[0][:, 0].mean())
    assert abs(losses[1][:, 1].mean() / losses[0][:, 1].mean() - 1) < 0.1


def _samples_done(progress: Path) -> int:
    try:
        return json.loads(progress.read_text())["samples_done"]
    except (OSError, ValueError):  # not written yet
        return 0


def _child_with_rank(parent: int, rank: int) -> int:
    """The pid of the process ``parent`` started with RANK=``rank`` in its environment (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent \
                    and f"RANK={rank}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:  # gone meanwhile
            continue
    raise AssertionError(f"no rank {rank} among the children of {parent}")


@pytest.mark.skipif(TORCHRUN is None or not Path("/proc/self/environ").exists(), reason="needs torchrun and /proc")
def test_a_rank_killed_stops_the_others_and_resume_completes_the_store(tmp_path):
    args = ["features", "--warmup-epochs", "0", "--posterior-samples", "12", "--batch-size", "16", "--quiet"]
    out, reference = tmp_path / "two.h5", tmp_path / "one.h5"
    progress = tmp_path / ".two.h5.partial" / "progress.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = subprocess.Popen([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *args, "--out", str(out)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while _samples_done(progress) < 1:  # a feature pass committed: mid-run
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-2000:]
        time.sleep(0.02)
    os.kill(_child_with_rank(run.pid, 1), signal.SIGKILL)
    killed = time.monotonic()
    output = run.communicate(timeout=30)[0]
    assert run.returncode != 0 and time.monotonic() - killed < 10
    assert b"rank      : 1" in output and b"SIGKILL" in output  # torchrun names the rank that died
    assert not out.exists() and 1 <= _samples_done(progress) < 13

    resumed = CliRunner().invoke(app, [*args, "--resume", "--out", str(out)])
    assert resumed.exit_code == 0 and "resuming" in resumed.output, resumed.output
    result = CliRunner().invoke(app, [*args, "--out", str(reference)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()


def _steps_done(progress: Path) -> int:
    try:
        return (json.loads(progress.read_text()).get("steps") or [0, 0, 0])[2]
    except (OSError, ValueError):  # not written yet
        return 0


@pytest.mark.skipif(TORCHRUN is None or not Path("/proc/self/environ").exists(), reason="needs torchrun and /proc")
def test_resume_under_torchrun_continues_each_rank_shard_mid_pass(tmp_path):
    """Feature passes go in batches of 1,024 rows: 20,000 rows are 10 batches per rank, committed step by step."""
    from tests.conftest import FASHION_MISSING, FASHION_ROOT

    if not (FASHION_ROOT / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(FASHION_MISSING)
    import numpy as np

    from prune.data.idx import _read_idx

    images, labels = (_read_idx(FASHION_ROOT / f"train-{kind}-idx{d}-ubyte.gz", images=d == 3)[:20000]
                      for kind, d in (("images", 3), ("labels", 1)))
    np.savez(tmp_path / "f.npz", x_train=images, y_train=labels, x_test=images[:100], y_test=labels[:100])
    args = ["features", "--dataset", f"npz:{tmp_path / 'f.npz'}", "--warmup-epochs", "0", "--posterior-samples", "3",
            "--quiet"]
    out, reference = tmp_path / "two.h5", tmp_path / "one.h5"
    progress = tmp_path / ".two.h5.partial" / "progress.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *args, "--out", str(out)]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while _steps_done(progress) < 3:  # some batches of every shard of a pass are in: mid-pass
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[0][-2000:]
        time.sleep(0.005)
    os.kill(_child_with_rank(run.pid, 1), signal.SIGKILL)
    run.communicate(timeout=30)
    recorded = json.loads(progress.read_text())
    assert run.returncode != 0 and not out.exists() and recorded["steps"][:2] == [2, 1024]

    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert b"batches of 1024 rows of each of 2 ranks' shards of the next pass" in resumed.stderr
    result = CliRunner().invoke(app, [*args, "--out", str(reference)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == reference.read_bytes()


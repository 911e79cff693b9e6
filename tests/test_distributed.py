"""Under torchrun: the rows shared among ranks, and a 2-process store and manifest equal to 1-process ones."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from typer.testing import CliRunner

from prune import distributed
from prune.cli import app
from prune.distributed import World

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


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed")
def test_two_processes_under_torchrun_write_the_one_process_store_and_manifest(tmp_path, fashion_slice):
    # 7 batches of 300: rank 0 computes 4, rank 1 3 (the last one short); two posterior samples and the point pass
    args = ["features", "--dataset", f"npz:{fashion_slice}", "--warmup-epochs", "1", "--posterior-samples", "2",
            "--batch-size", "300", "--quiet"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    result = CliRunner().invoke(app, [*args, "--out", str(one)])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *args, "--out", str(two)],
                   env=env, check=True, timeout=120, capture_output=True)
    assert two.read_bytes() == one.read_bytes()
    assert not list(tmp_path.glob(".*.partial"))

    select = ["select", "--features", str(two), "--method", "craig", "--fraction", "0.1"]
    result = CliRunner().invoke(app, [*select, "--out", str(tmp_path / "one.json")])
    assert result.exit_code == 0, result.output
    ran = subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", "-m", "prune", *select,
                          "--out", str(tmp_path / "two.json")], env=env, check=True, timeout=120, capture_output=True)
    assert (tmp_path / "two.json").read_bytes() == (tmp_path / "one.json").read_bytes()
    assert ran.stderr.count(b"selected 200 of 2000") == 1  # rank 0 alone selects and writes

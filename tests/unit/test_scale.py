"""Scale and speed without training: DDP sharding of the batches, and `aelab bench`'s command line."""

from __future__ import annotations

import pytest
import torch

from aelab.data.datamodule import AutoencoderDataModule, IndexBatches
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError
from tests.conftest import REPO


# ---- sharding -------------------------------------------------------------------------------------------------
def test_ranks_see_disjoint_shards_that_make_up_the_single_process_batches() -> None:
    n, batch, world = 103, 8, 2
    single = [b for _, b in IndexBatches(n, batch, shuffle=True, seed=5)]
    shards = [IndexBatches(n, batch // world, shuffle=True, seed=5, rank=r, world_size=world) for r in range(world)]
    per_rank = [[b for _, b in s] for s in shards]
    seen = torch.cat([torch.cat(b) for b in per_rank])
    assert len(per_rank[0]) == len(per_rank[1])
    assert set(seen.tolist()) == set(range(n))  # every row, and only the one wrap-around pad is repeated
    assert len(seen) - n == 1
    for k in range(len(single) - 1):  # the k-th global batch is the union of the ranks' k-th batches
        assert sorted(torch.cat([per_rank[0][k], per_rank[1][k]]).tolist()) == sorted(single[k].tolist())
    shards[0].set_epoch(1)
    assert not torch.equal(torch.cat([b for _, b in shards[0]]), torch.cat(per_rank[0]))


def test_global_batch_must_split_evenly_over_processes() -> None:
    data = PreparedData(*(Split(torch.rand(10, 4).numpy(), None) for _ in range(3)))
    dm = AutoencoderDataModule(data, batch_size=9)
    with pytest.raises(ConfigError, match=r"train\.batch_size: 9 .* divisible by the number of processes \(2\)"):
        dm.per_rank_batch_size(9, 2)


# ---- aelab bench -----------------------------------------------------------------------------------------------
def test_bench_choices_on_the_command_line_match_the_bench() -> None:
    from aelab import bench, cli

    assert cli.BENCH_DATA == bench.DATA_KINDS and cli.BENCH_PRECISIONS == bench.PRECISIONS


def test_bench_rejects_a_precision_it_cannot_compare() -> None:
    from aelab.cli import main

    assert main(["bench", "--params", str(REPO / "params.yaml"), "--set", "train.precision='64'"]) == 2

import numpy as np
import pytest
import torch

from aelab.data.corruptions import Masking
from aelab.data.datamodule import AutoencoderDataModule, IndexBatches
from aelab.data.prepared import PreparedData, Split
from aelab.errors import ConfigError


def _data(n: int = 100, d: int = 6) -> PreparedData:
    x = np.random.default_rng(0).random((n, d)).astype(np.float32)
    return PreparedData(Split(x, None), Split(x[:30], None), Split(x[:20], None))


def test_index_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    sampler = IndexBatches(n=103, batch_size=10, shuffle=True, seed=1)
    first = torch.cat([idx for _, idx in sampler])
    assert sorted(first.tolist()) == list(range(103)) and len(sampler) == 11
    sampler.set_epoch(1)
    second = torch.cat([idx for _, idx in sampler])
    assert not torch.equal(first, second)
    sampler.set_epoch(0)
    assert torch.equal(first, torch.cat([idx for _, idx in sampler]))


def test_ddp_shards_are_disjoint_and_equal_sized():
    shards = [torch.cat([i for _, i in IndexBatches(100, 8, True, 3, rank=r, world_size=4)]) for r in range(4)]
    assert all(len(s) == 25 for s in shards)
    assert sorted(torch.cat(shards).tolist()) == list(range(100))


def test_batches_are_corrupted_clean_pairs_and_validation_noise_is_fixed():
    dm = AutoencoderDataModule(_data(), batch_size=16, corruption=Masking(0.5), seed=0)
    dm.setup()
    x, number = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 6) and number == 0
    corrupted, clean = dm.on_after_batch_transfer((x, number), 0)
    assert torch.equal(clean, x) and (corrupted == 0).any() and not torch.equal(corrupted, clean)
    val = [dm.corrupt(xb, "val", 0, n) for xb, n in dm.val_dataloader()]
    again = [dm.corrupt(xb, "val", 0, n) for xb, n in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val, again, strict=True))
    assert not torch.equal(dm.corrupt(x, "train", 0, 0), dm.corrupt(x, "train", 1, 0))


def test_without_corruption_pairs_are_identical():
    dm = AutoencoderDataModule(_data(), batch_size=16)
    dm.setup()
    corrupted, clean = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    assert corrupted is clean


def test_neighbour_batches_pair_each_training_row_with_one_of_its_nearest_rows():
    data = _data(n=60)
    dm = AutoencoderDataModule(data, batch_size=16, seed=0, neighbours=3)
    dm.setup()
    x = data.split("train").x
    distances = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    nearest = np.argsort(distances, axis=1)[:, :3]
    rows, number, neighbour_rows = next(iter(dm.train_dataloader()))
    for row, neighbour in zip(rows.numpy(), neighbour_rows.numpy(), strict=True):
        i = int(np.flatnonzero((x == row).all(1))[0])
        j = int(np.flatnonzero((x == neighbour).all(1))[0])
        assert j in nearest[i]
    batch = dm.on_after_batch_transfer((rows, number, neighbour_rows), 0)
    assert len(batch) == 3 and torch.equal(batch[2], neighbour_rows)
    assert len(next(iter(dm.val_dataloader()))) == 2  # validation scores reconstruction only
    again = next(iter(dm.train_dataloader()))  # the same draw for the same epoch and batch
    assert torch.equal(again[2], neighbour_rows)


def test_more_neighbours_than_training_rows_is_a_clear_error():
    dm = AutoencoderDataModule(_data(n=10), batch_size=4, neighbours=10)
    with pytest.raises(
        ConfigError, match=r"variants\.undercomplete\.neighbours\.k: 10 must be below the training rows"
    ):
        dm.setup()

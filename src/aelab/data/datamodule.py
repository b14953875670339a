"""The LightningDataModule: in-memory tensors, batches drawn by index, corruption applied on the device.

Batches are whole index slices of resident tensors (no per-sample Python, no collate). The corruption runs in
`on_after_batch_transfer`, on the training device, with a generator seeded per (split, epoch, batch): the
validation and test corruption are the same every epoch, and a resumed training sees the same noise.
Under DDP each rank draws its own disjoint shard of a shared, epoch-seeded permutation, and `batch_size` is the
global batch: each of the `world_size` ranks takes `batch_size / world_size` rows, so that the union of the ranks'
k-th batches is exactly the k-th batch of the single-process run. With `on_training_device` the tensors and the
epoch's index permutation live on the trainer's root device (GPU memory on a GPU): a batch is a slice of the
permutation and a gather, with no host-device copy.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from aelab.data.corruptions import Corruption
from aelab.data.prepared import PreparedData
from aelab.errors import ConfigError

Batch = tuple[Tensor, ...]
"""A batch as the loaders yield it (rows, batch number[, neighbours]) and, after transfer, as steps see it."""
_STAGE_SALT = {"train": 0, "val": 1, "test": 2, "predict": 3}


class IndexBatches(Sampler[tuple[int, Tensor]]):
    """Yields (batch number, index tensor) per batch: shuffled per epoch and sharded across ranks."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | None = None,
    ) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.device = device or torch.device("cpu")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start, so every epoch has its own permutation."""
        self.epoch = epoch

    def _shard(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=generator)
        else:
            order = torch.arange(self.n)
        if self.world_size == 1:
            return order
        # Every rank gets the same number of samples (padding by wrap-around), disjoint where n allows.
        per_rank = math.ceil(self.n / self.world_size)
        order = torch.cat([order, order[: per_rank * self.world_size - self.n]])
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, Tensor]]:
        shard = self._shard().to(self.device)  # one copy per epoch; the batches below are views of it
        for number, start in enumerate(range(0, len(shard), self.batch_size)):
            yield number, shard[start : start + self.batch_size]

    def __len__(self) -> int:
        per_rank = math.ceil(self.n / self.world_size) if self.world_size > 1 else self.n
        return math.ceil(per_rank / self.batch_size)


class TensorRows(Dataset):
    """Index a resident tensor by a whole batch of indices at once."""

    def __init__(self, x: Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, item: tuple[int, Tensor]) -> tuple[Tensor, int]:
        number, indices = item
        return self.x[indices], number


class IndexLoader:
    """The loader Lightning iterates: gathers each index batch from the resident tensor, nothing else.

    A `torch.utils.data.DataLoader` adds fetcher, collate and worker bookkeeping to every batch, all idle here
    (the rows are in memory, on the device). Lightning needs only iteration, `len` and `sampler.set_epoch`.
    """

    def __init__(
        self, x: Tensor, sampler: IndexBatches, neighbours: Tensor | None = None, steps_per_call: int = 1
    ) -> None:
        """`neighbours` ([rows, k] indices into `x`): also yield, per row, one of its neighbours drawn at random.
        `steps_per_call` > 1: yield lists of that many consecutive batches (the last list may be shorter)."""
        self.dataset = TensorRows(x)
        self.sampler = sampler
        self.neighbours = neighbours
        self.steps_per_call = steps_per_call
        self.batch_sampler = None  # what Lightning's DataLoader inspection looks for

    def batches(self) -> Iterator[Batch]:
        x = self.dataset.x
        for number, indices in self.sampler:
            if self.neighbours is None:
                yield x[indices], number
                continue
            sampler = self.sampler
            generator = torch.Generator().manual_seed(sampler.seed * 1_000_003 + sampler.epoch * 7_919 + number)
            pick = torch.randint(self.neighbours.shape[1], (len(indices),), generator=generator).to(x.device)
            yield x[indices], number, x[self.neighbours[indices, pick]]

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        if self.steps_per_call == 1:
            yield from self.batches()
            return
        group: list[Batch] = []
        for batch in self.batches():
            group.append(batch)
            if len(group) == self.steps_per_call:
                yield group
                group = []
        if group:
            yield group

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.steps_per_call)


class AutoencoderDataModule(L.LightningDataModule):
    """Holds the prepared splits as tensors and yields (corrupted, clean) pairs."""

    def __init__(
        self,
        data: PreparedData,
        batch_size: int,
        corruption: Corruption | None = None,
        seed: int = 0,
        eval_batch_size: int | None = None,
        device: str | torch.device | None = None,
        on_training_device: bool = False,
        neighbours: int = 0,
        steps_per_call: int = 1,
    ) -> None:
        """`device` pins the tensors to one device; `on_training_device` puts them on the trainer's root device;
        `neighbours` > 0 adds to each training batch one of each row's `neighbours` nearest training rows;
        `steps_per_call` > 1 hands the training step lists of that many batches (`train.steps_per_call`)."""
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or max(batch_size, 1024)
        self.corruption = corruption
        self.seed = seed
        self.resident_device = torch.device(device) if device else None
        self.on_training_device = on_training_device
        self.neighbours = neighbours
        self.steps_per_call = steps_per_call
        self.neighbour_index: Tensor | None = None
        self.tensors: dict[str, Tensor] = {}
        self._generators: dict[torch.device, torch.Generator] = {}

    @property
    def n_features(self) -> int:
        return self.data.n_features

    def target_device(self) -> torch.device:
        if self.resident_device is not None:
            return self.resident_device
        if self.on_training_device and self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:
        """Move the splits once, when the trainer knows its device (each DDP process calls this for itself)."""
        device = self.target_device()
        if self.tensors and self.tensors["train"].device == device:
            return
        for name in ("train", "val", "test"):
            self.tensors[name] = torch.from_numpy(np.ascontiguousarray(self.data.split(name).x)).to(device)
        if self.neighbours:
            if self.neighbour_index is None:
                self.neighbour_index = nearest_training_rows(self.data.split("train").x, self.neighbours)
            self.neighbour_index = self.neighbour_index.to(device)

    def per_rank_batch_size(self, batch_size: int, world: int) -> int:
        """The global batch split evenly over the ranks (see the module docstring)."""
        if batch_size % world:
            raise ConfigError(
                f"train.batch_size: {batch_size} is the global batch and must be divisible by the number of "
                f"processes ({world}); use a multiple of {world}"
            )
        return batch_size // world

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> IndexLoader:
        rank, world = self._rank_world()
        x = self.tensors[split]
        per_rank = self.per_rank_batch_size(batch_size, world) if split == "train" else batch_size
        neighbours = self.neighbour_index if split == "train" else None
        sampler = IndexBatches(len(x), per_rank, shuffle, self.seed, rank, world, device=x.device)
        return IndexLoader(x, sampler, neighbours, self.steps_per_call if split == "train" else 1)

    def train_dataloader(self) -> IndexLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> IndexLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> IndexLoader:
        return self._loader("test", shuffle=False, batch_size=self.eval_batch_size)

    def _current_split(self) -> tuple[str, int]:
        trainer = self.trainer
        if trainer is None:
            return "predict", 0
        if trainer.training:
            return "train", trainer.current_epoch
        if trainer.testing:
            return "test", 0
        return "val", 0

    def corruption_generator(self, device: torch.device, split: str, epoch: int, batch: int) -> torch.Generator:
        """A generator on `device` seeded from (seed, split, epoch, batch, rank): reproducible, resumable."""
        generator = self._generators.get(device)
        if generator is None:
            generator = self._generators[device] = torch.Generator(device=device)
        rank, _ = self._rank_world()
        generator.manual_seed(hash((self.seed, _STAGE_SALT[split], epoch, batch, rank)) & 0x7FFF_FFFF_FFFF)
        return generator

    def corrupt(self, x: Tensor, split: str, epoch: int, batch: int) -> Tensor:
        if self.corruption is None:
            return x
        return self.corruption(x, self.corruption_generator(x.device, split, epoch, batch))

    def transfer_batch_to_device(self, batch: Batch | list[Batch], device: torch.device, dataloader_idx: int):
        """Resident batches are on the device already; others move their tensors (no collection walk)."""
        if isinstance(batch, list):  # several batches for one call (`steps_per_call`)
            return [self.transfer_batch_to_device(part, device, dataloader_idx) for part in batch]
        x, number, *neighbours = batch
        moved = [t if t.device == device else t.to(device, non_blocking=True) for t in (x, *neighbours)]
        return moved[0], number, *moved[1:]

    def on_after_batch_transfer(self, batch: Batch | list[Batch], dataloader_idx: int) -> Batch | list[Batch]:
        """(corrupted, clean), plus the rows' drawn neighbours (clean) where the variant asks for them; each batch
        of a list is corrupted by its own number, so the noise does not depend on `steps_per_call`."""
        if isinstance(batch, list):
            return [self.on_after_batch_transfer(part, dataloader_idx) for part in batch]
        x, number, *neighbours = batch
        split, epoch = self._current_split()
        return self.corrupt(x, split, epoch, number), x, *neighbours


def nearest_training_rows(x: np.ndarray, k: int) -> Tensor:
    """Indices ([rows, k]) of each row's k nearest other rows, Euclidean (scikit-learn's exact search)."""
    from sklearn.neighbors import NearestNeighbors

    if k >= len(x):
        raise ConfigError(f"variants.undercomplete.neighbours.k: {k} must be below the training rows ({len(x)})")
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    return torch.from_numpy(index[:, 1:].astype(np.int64))  # column 0 is the row itself

"""Resumable, rank-sharded P x K batches for the training stages.

The order of the training data is a pure function of ``(seed, global step)``: batch ``g``
belongs to epoch ``g // steps_per_epoch``; each epoch shuffles the places with
``numpy.random.default_rng([seed, epoch])`` and gives every place-draw its own seed (the
dataset uses it to pick the K images, see :class:`tatvpr_hw.data.gsv.GSVCitiesDataset`).
A run resumed at step ``g`` (``start_step``) therefore sees exactly the batches the
uninterrupted run saw, without having to replay the skipped ones.

With ``world_size`` ranks every optimizer step consumes ``world_size`` batches of P places
(rank ``r`` takes slot ``step * world_size + r`` of the epoch's permutation), so the ranks
never share a place within an epoch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

from tatvpr_hw.errors import UserError


def steps_per_epoch(num_places: int, places_per_batch: int, world_size: int = 1) -> int:
    """Optimizer steps in one pass over ``num_places`` (incomplete batches are dropped)."""
    steps = num_places // (places_per_batch * world_size)
    if steps < 1:
        raise UserError(f"the training set has {num_places} places, fewer than one step needs: "
                        f"{places_per_batch} places per batch (data.places_per_batch, or the stage's "
                        f"train.<stage>.places_per_batch) x {world_size} device(s); lower it or add places")
    return steps


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(place_index, item_seed)`` for one rank, starting at ``start_step``.

    Each ``iter()`` runs to the end of the current epoch (the first one possibly partial,
    after a resume); the next ``iter()`` continues with the following epoch.

    Args:
        num_places: places in the data set.
        places_per_batch: P, places per batch on one rank.
        seed: data-order seed.
        rank, world_size: this process's rank and the number of ranks.
        start_step: global optimizer step to start from (0 for a fresh run).
    """

    def __init__(self, num_places: int, places_per_batch: int, seed: int, *, rank: int = 0,
                 world_size: int = 1, start_step: int = 0) -> None:
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} out of range for world size {world_size}")
        self.num_places = int(num_places)
        self.places_per_batch = int(places_per_batch)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.steps_per_epoch = steps_per_epoch(self.num_places, self.places_per_batch, self.world_size)
        self.next_step = int(start_step)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(place order, per-draw item seeds) of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.num_places)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_places)
        return order, seeds

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The items of global step ``step`` for this rank."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        order, seeds = self.epoch_plan(epoch)
        lo = (pos * self.world_size + self.rank) * self.places_per_batch
        return [(int(order[i]), int(seeds[i])) for i in range(lo, lo + self.places_per_batch)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, pos = divmod(self.next_step, self.steps_per_epoch)
        order, seeds = self.epoch_plan(epoch)
        for p in range(pos, self.steps_per_epoch):
            self.next_step = epoch * self.steps_per_epoch + p + 1
            lo = (p * self.world_size + self.rank) * self.places_per_batch
            yield [(int(order[i]), int(seeds[i])) for i in range(lo, lo + self.places_per_batch)]


def collate_places(batch):
    """[(images [K,3,H,W], labels [K])] x P -> (images [P*K,3,H,W], labels [P*K])."""
    import torch

    return torch.cat([b[0] for b in batch]), torch.cat([b[1] for b in batch])


def make_step_loader(dataset: Dataset, places_per_batch: int, seed: int, *, rank: int = 0,
                     world_size: int = 1, start_step: int = 0, num_workers: int = 0) -> DataLoader:
    """DataLoader over ``dataset`` (items ``dataset[(index, item_seed)]``) in step order."""
    sampler = StepBatchSampler(len(dataset), places_per_batch, seed, rank=rank,
                               world_size=world_size, start_step=start_step)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_places,
                      num_workers=num_workers, persistent_workers=False)

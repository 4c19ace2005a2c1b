"""Batches: length-bucketed dynamic batches, DDP sharding, multitask mixing, a resumable position,
and the DataLoader that turns them into collated batch dicts (docs/internals.md, Batches).

Position semantics (both samplers): `state_dict()` is `{epoch, consumed}` where `consumed` counts the
batches of `epoch` already handed to the caller; the state moves *as* a batch is yielded, so a
checkpoint written after training on a batch resumes at the next one. Finishing an epoch moves the
state to `{epoch + 1, consumed 0}` by itself. Epochs are numbered from 1, as in fairseq.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from speechxl.data.dataset import (  # re-exported: the batch side of the data pipeline lives here
    Example,
    FeatureConfig,
    SpeechTextDataset,
    collate,
    load_datasets,
)

__all__ = [
    "BatchLoader",
    "DynamicBatchSampler",
    "Example",
    "FeatureConfig",
    "MultitaskSampler",
    "SpeechTextDataset",
    "build_loader",
    "collate",
    "length_batches",
    "load_datasets",
    "padding_efficiency",
]

log = logging.getLogger(__name__)


def length_batches(sizes: np.ndarray, max_tokens: int, max_sentences: int = 0) -> list[list[int]]:
    """Sort indices by size and cut them into batches whose padded cost, size of the longest member ×
    batch size, stays within `max_tokens` (0: no limit), with at most `max_sentences` (0: no limit).

    Examples larger than `max_tokens` on their own are left out; callers count them.
    """
    order = np.argsort(sizes, kind="stable")  # ties keep index order: batches are reproducible
    batches: list[list[int]] = []
    batch: list[int] = []
    for index in order.tolist():
        size = int(sizes[index])
        if max_tokens and size > max_tokens:
            continue
        # ascending order: the newcomer is the longest, so it fixes the padded length
        too_many = (max_tokens and (len(batch) + 1) * size > max_tokens) or (
            max_sentences and len(batch) + 1 > max_sentences
        )
        if batch and too_many:
            batches.append(batch)
            batch = []
        batch.append(index)
    if batch:
        batches.append(batch)
    return batches


def padding_efficiency(batches: Sequence[Sequence[int]], sizes: np.ndarray) -> float:
    """Non-padding fraction of all padded batch cells: Σ sizes / Σ (longest × batch size)."""
    real = sum(int(sizes[list(b)].sum()) for b in batches)
    padded = sum(int(sizes[list(b)].max()) * len(b) for b in batches)
    return real / padded if padded else 1.0


def _distributed_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class DynamicBatchSampler:
    """Length-bucketed batches under a budget, reshuffled per epoch, sharded over DDP ranks, resumable.

    `sizes` are per-example costs (`SpeechTextDataset.sizes`: samples, fbank frames or tokens).
    The batches themselves are fixed (sorted by length, cut under the budget); each epoch shuffles their
    order with seed `seed + epoch` (no shuffle: sorted order, for validation). The epoch's list is padded
    by repeating from its start to a multiple of `world_size`, and rank r takes batches r, r+W, ..., so
    every rank runs the same number of steps. `rank`/`world_size` default to torch.distributed's.
    """

    def __init__(
        self,
        sizes: Sequence[int] | np.ndarray,
        *,
        max_tokens: int,
        max_sentences: int = 0,
        seed: int = 1,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if not max_tokens and not max_sentences:
            raise ValueError("set max_tokens or max_sentences (or both): a batch needs a budget")
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.seed, self.shuffle = seed, shuffle
        self.rank, self.world_size = _distributed_rank_world(rank, world_size)
        self.batches = length_batches(self.sizes, max_tokens, max_sentences)
        self.skipped_oversize = int((self.sizes > max_tokens).sum()) if max_tokens else 0
        if self.skipped_oversize:
            log.warning(
                "skipped %d example(s) longer than max_tokens=%d on their own (longest: %d)",
                self.skipped_oversize,
                max_tokens,
                int(self.sizes.max()),
            )
        if not self.batches:
            raise ValueError(f"no batches: {len(self.sizes)} example(s), none fits max_tokens={max_tokens}")
        self.epoch, self.consumed = 1, 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`, in order."""
        if self._cache is None or self._cache[0] != epoch:
            n = len(self.batches)
            order = np.random.default_rng(self.seed + epoch).permutation(n) if self.shuffle else np.arange(n)
            total = -(-n // self.world_size) * self.world_size
            ordered = [self.batches[order[i % n]] for i in range(total)]  # pad by repeating from the start
            self._cache = (epoch, ordered[self.rank :: self.world_size])
        return self._cache[1]

    def next_batch(self) -> tuple[int, list[int]]:
        """Hand out the batch at the current position as (epoch, indices) and move past it."""
        epoch = self.epoch
        batches = self.epoch_batches(epoch)
        batch = batches[self.consumed]
        self.consumed += 1
        if self.consumed == len(batches):
            self.epoch, self.consumed = epoch + 1, 0
        return epoch, batch

    def steps(self) -> Iterator[tuple[int, list[int]]]:
        """(epoch, indices) for the rest of the current epoch, advancing the position as each is yielded."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self.next_batch()

    def __iter__(self) -> Iterator[list[int]]:
        for _, batch in self.steps():
            yield batch

    def __len__(self) -> int:
        """Batches left in the current epoch on this rank."""
        return len(self.epoch_batches(self.epoch)) - self.consumed

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning; the current epoch keeps its position (so a resumed run that
        calls set_epoch(resumed_epoch), like a DistributedSampler loop does, does not rewind)."""
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        if self.consumed >= len(self.epoch_batches(self.epoch)):
            raise ValueError(
                f"sampler state {dict(state)} is past the end of the epoch "
                f"({len(self.epoch_batches(self.epoch))} batches on this rank)"
            )


class MultitaskSampler:
    """Interleaves single-task batches from several task samplers by sampling ratios.

    Before step k of an epoch a task is drawn with probability ratio/Σratios from a generator seeded by
    (seed, epoch, k // 4096), so the draw sequence is the same on every rank (all ranks train the same
    task at the same step) and a resumed run redraws exactly. The epoch ends when `epoch_task` (default:
    the first task) finishes an epoch of its own sampler; the other tasks' samplers wrap around into
    their next epochs as often as needed. Each task sampler keeps its own budget (e.g. audio samples for
    st/asr, tokens for mt).
    """

    _BLOCK = 4096

    def __init__(
        self,
        samplers: Mapping[str, DynamicBatchSampler],
        ratios: Mapping[str, float],
        *,
        seed: int = 1,
        epoch_task: str | None = None,
    ):
        if set(samplers) != set(ratios):
            raise ValueError(f"ratios {sorted(ratios)} must name exactly the tasks {sorted(samplers)}")
        if any(r < 0 for r in ratios.values()) or sum(ratios.values()) <= 0:
            raise ValueError(f"ratios must be non-negative with a positive sum, got {dict(ratios)}")
        self.samplers = dict(samplers)
        self.tasks = list(self.samplers)
        self.epoch_task = epoch_task or self.tasks[0]
        if ratios[self.epoch_task] <= 0:
            raise ValueError(f"epoch_task {self.epoch_task!r} needs a positive ratio, or the epoch never ends")
        weights = np.array([ratios[t] for t in self.tasks], dtype=np.float64)
        self._cumulative = np.cumsum(weights / weights.sum())
        self.seed = seed
        self.epoch, self.consumed = 1, 0
        self._draws: tuple[tuple[int, int], np.ndarray] | None = None

    def _task_at(self, step: int) -> str:
        block = step // self._BLOCK
        if self._draws is None or self._draws[0] != (self.epoch, block):
            rng = np.random.default_rng([self.seed, self.epoch, block])
            self._draws = ((self.epoch, block), rng.random(self._BLOCK))
        u = self._draws[1][step % self._BLOCK]
        return self.tasks[min(int(np.searchsorted(self._cumulative, u, side="right")), len(self.tasks) - 1)]

    def steps(self) -> Iterator[tuple[str, int, list[int]]]:
        """(task, that task's epoch, indices) for the rest of the epoch, advancing as each is yielded."""
        epoch = self.epoch
        while self.epoch == epoch:
            task = self._task_at(self.consumed)
            sampler = self.samplers[task]
            task_epoch, batch = sampler.next_batch()
            self.consumed += 1
            if task == self.epoch_task and sampler.epoch != task_epoch:
                self.epoch, self.consumed = epoch + 1, 0
            yield task, task_epoch, batch

    def __iter__(self) -> Iterator[tuple[str, list[int]]]:
        for task, _, batch in self.steps():
            yield task, batch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "tasks": {t: s.state_dict() for t, s in self.samplers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        for task, sampler in self.samplers.items():
            sampler.load_state_dict(state["tasks"][task])


Sampler = DynamicBatchSampler | MultitaskSampler


def _task_steps(sampler: Sampler, single_task: str | None) -> Iterator[tuple[str, int, list[int]]]:
    if isinstance(sampler, MultitaskSampler):
        yield from sampler.steps()
    else:
        for epoch, batch in sampler.steps():
            yield single_task, epoch, batch


class _TaskRouter(torch.utils.data.Dataset):
    """Serves keys (task, epoch, index) from the task's dataset, so one DataLoader feeds every task."""

    def __init__(self, datasets: Mapping[str, SpeechTextDataset]):
        self.datasets = dict(datasets)

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())

    def __getitem__(self, key: tuple[str, int, int]) -> tuple[str, Example]:
        task, epoch, index = key
        return task, self.datasets[task][(epoch, index)]


class _TaskCollater:
    def __init__(self, datasets: Mapping[str, SpeechTextDataset]):
        self.datasets = dict(datasets)

    def __call__(self, items: list[tuple[str, Example]]) -> dict[str, Any]:
        task = items[0][0]
        return self.datasets[task].collate([example for _, example in items])


class _PlannedKeys:
    """The DataLoader's batch sampler: the rest of the current epoch, planned on a copy of the sampler so
    that DataLoader prefetching never moves the real position (BatchLoader moves it per delivered batch)."""

    def __init__(self, loader: BatchLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[list[tuple[str, int, int]]]:
        planner = copy.deepcopy(self.loader.sampler)
        for task, epoch, batch in _task_steps(planner, self.loader.single_task):
            yield [(task, epoch, index) for index in batch]

    def __len__(self) -> int:
        return sum(1 for _ in _task_steps(copy.deepcopy(self.loader.sampler), self.loader.single_task))


class BatchLoader:
    """Collated batch dicts in sampler order for the rest of the current epoch (one `for` loop = one
    epoch), with the sampler's position advanced exactly per batch handed to the caller, so
    `state_dict()` after any batch resumes at the next one even with worker prefetching."""

    def __init__(
        self,
        datasets: SpeechTextDataset | Mapping[str, SpeechTextDataset],
        sampler: Sampler,
        *,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
    ):
        if isinstance(datasets, SpeechTextDataset):
            datasets = {datasets.task: datasets}
        if isinstance(sampler, MultitaskSampler):
            missing = set(sampler.tasks) - set(datasets)
            if missing:
                raise ValueError(f"no dataset for task(s) {sorted(missing)}")
            self.single_task = None
        elif len(datasets) != 1:
            raise ValueError("a DynamicBatchSampler serves one dataset; mix several with a MultitaskSampler")
        else:
            self.single_task = next(iter(datasets))
        self.sampler = sampler
        self.loader = DataLoader(
            _TaskRouter(datasets),
            batch_sampler=_PlannedKeys(self),
            collate_fn=_TaskCollater(datasets),
            num_workers=num_workers,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=persistent_workers and num_workers > 0,
            prefetch_factor=prefetch_factor if num_workers > 0 else None,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        position = _task_steps(self.sampler, self.single_task)
        for batch in self.loader:
            next(position)
            yield batch

    def __len__(self) -> int:
        return len(self.loader)

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def build_loader(
    datasets: SpeechTextDataset | Mapping[str, SpeechTextDataset],
    sampler: Sampler,
    *,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    persistent_workers: bool = False,
) -> BatchLoader:
    """DataLoader factory: `num_workers` processes load and collate; `pin_memory` defaults to CUDA being
    available; persistent workers are off by default (on CPU they hold memory and cores between epochs)."""
    return BatchLoader(
        datasets, sampler, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers
    )

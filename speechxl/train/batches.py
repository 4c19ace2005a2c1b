"""The trainer's view of the data: config -> per-task datasets, samplers and loaders (speechxl.data.batching).

Tasks share one manifest per split. Each task gets its own budget (fbank frames / wave samples / tokens)
and, with several tasks or external MT, a MultitaskSampler mixes them with the ratios documented on
`DataConfig`, or with a progressive-training stage's own (`task_ratios`). Validation runs on the main rank
only, unsharded and unshuffled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from speechxl.config import DataConfig, ExperimentConfig
from speechxl.data.batching import (
    BatchLoader,
    DynamicBatchSampler,
    FeatureConfig,
    MultitaskSampler,
    SpeechTextDataset,
    build_loader,
    load_datasets,
)
from speechxl.errors import DataError
from speechxl.tasks import AUDIO, EXT_MT, TASKS, task_of_source
from speechxl.train.distributed import DistEnv


def _budget(cfg: DataConfig, task: str) -> int:
    if task_of_source(task).budget == AUDIO and cfg.features == "wave":
        return cfg.max_wave_samples
    return cfg.max_tokens


def _manifest(cfg: DataConfig, split: str) -> Path:
    path = Path(cfg.manifest_dir) / f"{split}.tsv"
    if not path.is_file():
        raise DataError(path, f"manifest not found (data.manifest_dir={cfg.manifest_dir!r}, split {split!r})")
    return path


def _sampler(
    dataset: SpeechTextDataset, cfg: DataConfig, task: str, *, seed: int, shuffle: bool, rank: int, world_size: int
) -> DynamicBatchSampler:
    return DynamicBatchSampler(
        dataset.sizes,
        max_tokens=_budget(cfg, task),
        max_sentences=cfg.max_sentences,
        seed=seed,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
    )


class LoaderData:
    """TrainData over a BatchLoader for training and one loader per task for validation."""

    def __init__(self, train: BatchLoader, valid: Mapping[str, BatchLoader]):
        self.train = train
        self.valid = dict(valid)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # A DataLoader draws its workers' base seed from the global torch RNG when it starts an epoch;
        # keep that draw out of the trainer's RNG stream, so a resumed run draws the same dropout masks.
        saved = torch.get_rng_state()
        batches = iter(self.train)
        first = next(batches, None)
        torch.set_rng_state(saved)
        if first is None:
            return
        yield first
        yield from batches

    def state_dict(self) -> dict[str, Any]:
        return self.train.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.train.load_state_dict(state)

    def valid_batches(self) -> Iterable[dict[str, Any]]:
        for loader in self.valid.values():
            saved = torch.get_rng_state()
            yield from loader
            torch.set_rng_state(saved)


def default_task_ratios(cfg: DataConfig) -> dict[str, float]:
    """Sampling ratios without a `stages` section: every task in `data.tasks` 1, external MT `ext_mt_ratio`."""
    ratios = {task: 1.0 for task in cfg.tasks}
    if cfg.ext_mt_split:
        ratios[EXT_MT] = cfg.ext_mt_ratio
    return ratios


def validation_tasks(task_ratios: Mapping[str, float]) -> list[str]:
    """The tasks validated on the dev split: the trained in-domain ones (MT when only external MT trains)."""
    return [task for task in task_ratios if task != EXT_MT] or ["mt"]


def build_train_data(
    cfg: ExperimentConfig,
    vocab,
    env: DistEnv,
    *,
    task_ratios: Mapping[str, float] | None = None,
    seed: int | None = None,
) -> LoaderData:
    """Training batches mixing `task_ratios` (task or `ext_mt` -> sampling ratio; default
    `default_task_ratios`), sampled with `seed` (default train.seed), and validation batches of those tasks."""
    data = cfg.data
    seed = cfg.train.seed if seed is None else seed
    ratios = dict(task_ratios) if task_ratios is not None else default_task_ratios(data)
    unknown = [t for t in ratios if t != EXT_MT and t not in TASKS]
    if unknown:
        raise DataError("data.tasks", f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    features = FeatureConfig.from_data(dataclasses.asdict(data), train=True)  # SpecAugment only on train=True sets
    options = dict(
        features=features,
        prepend_lang_tag=data.prepend_lang_tag,
        seed=seed,
        langs={"src_lang": data.src_lang, "tgt_lang": data.tgt_lang},
    )
    datasets: dict[str, SpeechTextDataset] = load_datasets(
        _manifest(data, data.train_split), [t for t in ratios if t != EXT_MT], vocab, train=True, **options
    )
    if EXT_MT in ratios:
        if not data.ext_mt_split:
            raise DataError(
                "data.ext_mt_split",
                "the training tasks include ext_mt but data.ext_mt_split is not "
                "set (the external MT manifest prep writes as ext_mt.tsv)",
            )
        datasets[EXT_MT] = SpeechTextDataset.from_manifest(
            _manifest(data, data.ext_mt_split), "mt", vocab, train=True, **options
        )
    # in `ratios` order: the MultitaskSampler's draws map to tasks in that order
    samplers = {
        name: _sampler(
            datasets[name], data, datasets[name].task, seed=seed, shuffle=True, rank=env.rank, world_size=env.world_size
        )
        for name in ratios
    }
    if len(samplers) == 1:
        sampler: DynamicBatchSampler | MultitaskSampler = next(iter(samplers.values()))
    else:
        sampler = MultitaskSampler(samplers, ratios, seed=seed, epoch_task=next(iter(ratios)))
    train = build_loader(datasets, sampler, num_workers=data.num_workers)
    valid_sets = load_datasets(
        _manifest(data, data.valid_split), validation_tasks(ratios), vocab, train=False, **options
    )
    valid = {
        task: build_loader(
            ds, _sampler(ds, data, task, seed=seed, shuffle=False, rank=0, world_size=1), num_workers=data.num_workers
        )
        for task, ds in valid_sets.items()
    }
    return LoaderData(train, valid)

"""The trainer's view of the data: config -> per-task datasets, samplers and loaders (speechxl.data.batching).

Tasks share one manifest per split. Each task gets its own budget (fbank frames / wave samples / tokens)
and, with several tasks or external MT, a MultitaskSampler mixes them with the ratios documented on
`DataConfig`. Validation runs on the main rank only, unsharded and unshuffled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch

from speechxl.config import DataConfig, ExperimentConfig
from speechxl.data.batching import (
    BatchLoader, DynamicBatchSampler, FeatureConfig, MultitaskSampler, SpeechTextDataset, build_loader,
    load_datasets,
)
from speechxl.errors import DataError
from speechxl.train.distributed import DistEnv

EXT_MT = "ext_mt"
_AUDIO_TASKS = ("st", "asr", "triplet")


def bleu_task(tasks: list[str]) -> str | None:
    """The task validation BLEU is measured on: speech translation when trained, else MT."""
    return next((t for t in ("st", "triplet", "mt") if t in tasks), None)


def _budget(cfg: DataConfig, task: str) -> int:
    if task in _AUDIO_TASKS and cfg.features == "wave":
        return cfg.max_wave_samples
    return cfg.max_tokens


def _manifest(cfg: DataConfig, split: str) -> Path:
    path = Path(cfg.manifest_dir) / f"{split}.tsv"
    if not path.is_file():
        raise DataError(path, f"manifest not found (data.manifest_dir={cfg.manifest_dir!r}, split {split!r})")
    return path


def _sampler(dataset: SpeechTextDataset, cfg: DataConfig, task: str, *, seed: int, shuffle: bool,
             rank: int, world_size: int) -> DynamicBatchSampler:
    return DynamicBatchSampler(dataset.sizes, max_tokens=_budget(cfg, task), max_sentences=cfg.max_sentences,
                               seed=seed, shuffle=shuffle, rank=rank, world_size=world_size)


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


def build_train_data(cfg: ExperimentConfig, vocab, env: DistEnv) -> LoaderData:
    data, seed = cfg.data, cfg.train.seed
    features = FeatureConfig(features=data.features, specaugment=data.specaugment or None,
                             cache=data.cache_features)
    datasets: dict[str, SpeechTextDataset] = load_datasets(
        _manifest(data, data.train_split), data.tasks, vocab, features=features, train=True, seed=seed)
    if data.ext_mt_split:
        datasets[EXT_MT] = SpeechTextDataset.from_manifest(_manifest(data, data.ext_mt_split), "mt", vocab,
                                                           features=features, train=True, seed=seed)
    samplers = {name: _sampler(ds, data, ds.task, seed=seed, shuffle=True, rank=env.rank,
                               world_size=env.world_size) for name, ds in datasets.items()}
    if len(samplers) == 1:
        sampler: DynamicBatchSampler | MultitaskSampler = next(iter(samplers.values()))
    else:
        ratios = {name: (data.ext_mt_ratio if name == EXT_MT else 1.0) for name in samplers}
        sampler = MultitaskSampler(samplers, ratios, seed=seed, epoch_task=data.tasks[0])
    train = build_loader(datasets, sampler, num_workers=data.num_workers)
    valid_sets = load_datasets(_manifest(data, data.valid_split), data.tasks, vocab, features=features,
                               train=False, seed=seed)
    valid = {task: build_loader(ds, _sampler(ds, data, task, seed=seed, shuffle=False, rank=0, world_size=1),
                                num_workers=data.num_workers)
             for task, ds in valid_sets.items()}
    return LoaderData(train, valid)

"""Examples per task (speechxl.tasks: ST / ASR / MT / triplet, ...) from manifest rows, and their collation
into the batch dict of docs/internals.md.

Token sequences are built once at construction (SentencePiece is fast and the ids are small), audio is
loaded lazily per item, so a Dataset pickles cheaply into DataLoader workers.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import torch

from speechxl.data.audio import (
    SpecAugment,
    compute_fbank,
    fbank_frames,
    global_cmvn,
    load_audio,
    utterance_cmvn,
    utterance_cmvn_fairseq,
)
from speechxl.data.manifest import read_manifest
from speechxl.data.zipped import holds_features, load_zip_entry, split_zip_slice
from speechxl.errors import DataError
from speechxl.tasks import AUDIO, LANG_COLUMN, TEXT_COLUMN, TRANSCRIPT, get_task

log = logging.getLogger(__name__)


class TokenVocab(Protocol):
    """What examples need from `speechxl.data.vocab.Vocab`."""

    pad: int
    eos: int

    def encode(self, text: str) -> list[int]: ...

    def tag(self, name: str) -> int: ...

    def has_tag(self, name: str) -> bool: ...


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes model input.

    `features`: "wave" (raw 16 kHz samples, for wav2vec 2.0 models) or "fbank" (80-dim log-mel).
    `cmvn`: utterance mean/variance normalisation of fbank. `specaugment`: a policy name (lb, ld, sm, ss),
    or None for no augmentation; it is only applied when the dataset is built with `train=True`.
    `cache`: keep each utterance's features (before SpecAugment) in memory after their first computation,
    so later epochs skip audio decoding and fbank; for small corpora (SynthST) trained for many epochs.
    `global_cmvn`: a stats .npz (fairseq's `mean`, `std`) normalising every utterance instead of `cmvn`.
    `fairseq_cmvn`: utterance CMVN computed in float32 exactly as fairseq does (for fairseq-trained models).
    Stored features (fairseq's fbank80.zip) skip the fbank computation but get the same CMVN and SpecAugment.
    """

    features: str = "fbank"
    cmvn: bool = True
    specaugment: str | None = None
    num_mel_bins: int = 80
    cache: bool = False
    global_cmvn: str = ""
    fairseq_cmvn: bool = False

    @classmethod
    def from_data(cls, data: Mapping[str, Any], *, train: bool = False) -> "FeatureConfig":
        """From a config's `data` section (DataConfig fields, or its dict in a checkpoint)."""
        cmvn = data.get("cmvn", "utterance") or "none"
        if cmvn not in ("utterance", "utterance_fairseq", "global", "none"):
            raise DataError("data.cmvn", f"must be utterance, utterance_fairseq, global or none, not {cmvn!r}")
        stats = data.get("global_cmvn_stats", "") if cmvn == "global" else ""
        if cmvn == "global" and not stats:
            raise DataError("data.global_cmvn_stats", "data.cmvn is global but no stats .npz is given")
        return cls(
            features=data.get("features", "fbank"),
            cmvn=cmvn.startswith("utterance"),
            fairseq_cmvn=cmvn == "utterance_fairseq",
            specaugment=(data.get("specaugment") or None) if train else None,
            cache=bool(data.get("cache_features", False)),
            global_cmvn=stats,
        )

    def __post_init__(self) -> None:
        if self.features not in ("wave", "fbank"):
            raise ValueError(f"features must be 'wave' or 'fbank', not {self.features!r}")
        if self.specaugment is not None:
            SpecAugment.from_policy(self.specaugment)  # fail at config time on an unknown policy


@dataclass
class Example:
    """One item: tensors without padding; None where the task has no such field."""

    id: str
    audio: torch.Tensor | None  # (T,) wave or (T, bins) fbank
    transcript: torch.Tensor | None  # long, [<src_lang>] + tokens + [</s>]
    target: torch.Tensor | None  # long, [<tgt_lang>] + tokens + [</s>]
    prefix: int | None = None  # the decoder's forced first token (the task's language tag); None: no tag


class SpeechTextDataset(torch.utils.data.Dataset):
    """One task's examples from one manifest.

    `sizes[i]` is example i's cost for the batch budget: 16 kHz samples (wave), fbank frames (fbank),
    or the longer of source and target tokens (text tasks). Rows a task cannot use (empty text, no audio,
    audio shorter than one 25 ms window) are skipped, counted in `skipped`, kept per row in `skip_reasons`
    (row index -> reason), and logged once. `row_index[i]` is the manifest row of example i.
    With `decoding=True` only the encoder input is required (audio, or the source text of a text task):
    references are read from the rows by whoever scores.
    Item keys are an index, or `(epoch, index)` so SpecAugment draws differ per epoch yet stay
    reproducible (the generator is seeded from seed, epoch and index).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, str]],
        task: str,
        vocab: TokenVocab,
        *,
        manifest: str | os.PathLike = "<rows>",
        features: FeatureConfig = FeatureConfig(),
        prepend_lang_tag: bool = True,
        train: bool = False,
        seed: int = 1,
        decoding: bool = False,
        langs: Mapping[str, str] | None = None,
    ):
        self.spec = get_task(task)
        self.task = task
        self.manifest = str(manifest)
        self.base_dir = os.path.dirname(os.path.abspath(self.manifest))
        self.features = features
        self.pad, self.eos = vocab.pad, vocab.eos
        self.seed = seed
        self.specaugment = (
            SpecAugment.from_policy(features.specaugment)
            if train and features.specaugment and features.features == "fbank"
            else None
        )
        spec = self.spec
        if decoding:
            self.required = ("audio",) if spec.encoder_input == AUDIO else ("src_text",)
            self.texts = () if spec.encoder_input == AUDIO else (TRANSCRIPT,)
        else:
            self.required, self.texts = spec.fields, spec.texts
        self.skipped: Counter[str] = Counter()
        self.skip_reasons: dict[int, str] = {}
        self._feature_cache: dict[int, np.ndarray] = {}
        self.ids: list[str] = []
        self.lines: list[int] = []  # manifest line of each kept example, for error messages
        self.row_index: list[int] = []
        self.audio: list[str] = []
        # int32 arrays, not lists of Python ints: ~8x less memory on a 250k-utterance corpus, in every worker
        self.tokens: dict[str, list[np.ndarray]] = {key: [] for key in self.texts}
        self.prefixes: list[int] = []  # the forced decoder prefix (language tag) of each example
        self.prepend_lang_tag = prepend_lang_tag
        # Languages of manifests without src_lang / tgt_lang columns (fairseq's bilingual ones), by column.
        self.langs = {key: value for key, value in (langs or {}).items() if value}
        self.stored: set[int] = set()  # examples whose audio is a stored feature matrix (fairseq fbank80.zip)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None
        sizes: list[int] = []
        for index, row in enumerate(rows):
            line = index + 2  # line 1 is the header
            unreadable = None
            try:
                stored = "audio" in self.required and self._holds_features(row, line)
            except DataError as err:
                if not decoding:
                    raise
                stored, unreadable = False, err.reason  # decoding: this input fails alone, named by translate
            reason = unreadable or self._skip_reason(row, stored)
            if reason:
                self.skipped[reason] += 1
                self.skip_reasons[index] = reason
                continue
            tokens = {key: self._tokens(vocab, row, key, line) for key in self.texts}
            if prepend_lang_tag and spec.prefix_lang:  # loss-only tasks have no decoder prefix
                self.prefixes.append(self._tag(vocab, row, spec.prefix_lang, line))
            if stored:
                self.stored.add(len(self.ids))
            self.ids.append(row["id"])
            self.lines.append(line)
            self.row_index.append(index)
            self.audio.append(row["audio"])
            for key, ids in tokens.items():
                self.tokens[key].append(ids)
            sizes.append(self._size(int(row["n_frames"] or 0), tokens, stored))
        self.sizes = np.asarray(sizes, dtype=np.int64)
        if self.skipped:
            log.warning("%s (%s): skipped %s", self.manifest, task, self.skip_report())

    @classmethod
    def from_manifest(cls, path: str | os.PathLike, task: str, vocab: TokenVocab, **kwargs: Any) -> SpeechTextDataset:
        return cls(read_manifest(path), task, vocab, manifest=path, **kwargs)

    def skip_report(self) -> str:
        return ", ".join(f"{n} row(s) with {reason}" for reason, n in sorted(self.skipped.items())) or "nothing"

    def _holds_features(self, row: Mapping[str, str], line: int) -> bool:
        """Whether the row's audio is a stored feature matrix; then `n_frames` counts feature frames."""
        if not row.get("audio") or split_zip_slice(row["audio"]) is None:
            return False
        if not holds_features(row["audio"], self.base_dir, manifest=self.manifest, line=line):
            return False
        if self.features.features == "wave":
            raise DataError(
                self.manifest,
                f"audio {row['audio']} holds stored fbank features, but this model "
                "reads raw waves (data.features: wave); give it audio (e.g. fairseq's flac.zip)",
                line,
            )
        return True

    def _skip_reason(self, row: Mapping[str, str], stored: bool = False) -> str | None:
        if "audio" in self.required:
            if not row.get("audio"):
                return "no audio"
            if stored:
                if int(row["n_frames"] or 0) == 0:
                    return "no feature frames"
            elif fbank_frames(int(row["n_frames"] or 0)) == 0:  # wav2vec2's first conv needs a 25 ms window too
                return "audio shorter than one 25 ms window"
        for column in ("src_text", "tgt_text"):
            if column in self.required and not row.get(column, "").strip():
                return f"empty {column}"
        return None

    def _tag(self, vocab: TokenVocab, row: Mapping[str, str], lang_key: str, line: int) -> int:
        lang = row.get(lang_key, "") or self.langs.get(lang_key, "")
        if not lang:
            raise DataError(
                self.manifest,
                f"no {lang_key}: the manifest has no {lang_key} column value and none "
                f"was given (data.{lang_key} or --{lang_key.replace('_', '-')}); or set "
                "data.prepend_lang_tag false for a model without language tags",
                line,
            )
        if not vocab.has_tag(lang):
            raise DataError(self.manifest, f"{lang_key} {lang!r} has no language tag in the vocabulary", line)
        return vocab.tag(lang)

    def _tokens(self, vocab: TokenVocab, row: Mapping[str, str], key: str, line: int) -> np.ndarray:
        prefix = [self._tag(vocab, row, LANG_COLUMN[key], line)] if self.prepend_lang_tag else []
        return np.asarray(prefix + vocab.encode(row[TEXT_COLUMN[key]]) + [vocab.eos], dtype=np.int32)

    def _size(self, n_samples: int, tokens: Mapping[str, np.ndarray], stored: bool = False) -> int:
        if self.spec.budget == AUDIO:
            if stored:  # n_frames of a stored matrix counts its frames
                return n_samples
            return n_samples if self.features.features == "wave" else fbank_frames(n_samples)
        return max((len(ids) for ids in tokens.values()), default=0)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> Example:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return Example(
            id=self.ids[index],
            audio=self._load_audio(index, epoch) if "audio" in self.required else None,
            transcript=_long(self.tokens[TRANSCRIPT][index]) if TRANSCRIPT in self.tokens else None,
            target=_long(self.tokens["target"][index]) if "target" in self.tokens else None,
            prefix=self.prefixes[index] if self.prefixes else None,
        )

    def _load_audio(self, index: int, epoch: int) -> torch.Tensor:
        feats = self._feature_cache.get(index)
        if feats is None:
            feats = self._features(index)
            if self.features.cache:
                self._feature_cache[index] = feats
        if self.specaugment is not None:
            feats = self.specaugment(feats, np.random.default_rng([self.seed, epoch, index]))
        return torch.from_numpy(feats)

    def _features(self, index: int) -> np.ndarray:
        """The model input of example `index` before augmentation: raw wave, or (C)fbank; stored features
        (a fairseq fbank80.zip member) as stored, then CMVN."""
        spec, where = self.audio[index], dict(manifest=self.manifest, line=self.lines[index])
        if split_zip_slice(spec) is not None:
            kind, data = load_zip_entry(spec, self.base_dir, **where)
        else:
            kind, data = "wave", load_audio(spec, self.base_dir, **where)
        if kind == "wave":
            if self.features.features == "wave":
                return data
            feats = compute_fbank(data, self.features.num_mel_bins)
        else:
            feats = data
        if self.features.global_cmvn:
            if self._stats is None:
                self._stats = load_cmvn_stats(self.features.global_cmvn)
            return global_cmvn(feats, *self._stats)
        if not self.features.cmvn:
            return feats
        return utterance_cmvn_fairseq(feats) if self.features.fairseq_cmvn else utterance_cmvn(feats)

    def collate(self, examples: Sequence[Example]) -> dict[str, Any]:
        return collate(examples, self.task, self.pad, self.eos)


def load_cmvn_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """fairseq's global CMVN stats: an .npz with `mean` and `std` per feature dimension."""
    try:
        with np.load(path) as stats:
            return stats["mean"].astype(np.float32), stats["std"].astype(np.float32)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(path, f"not a global CMVN stats .npz with 'mean' and 'std' ({err})") from err


def _long(ids: np.ndarray | None) -> torch.Tensor | None:
    return None if ids is None else torch.from_numpy(ids.astype(np.int64))


def _right_pad(seqs: Sequence[torch.Tensor], value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack along a new batch dim, right-padding dim 0 with `value`; also return the lengths.

    A preallocated tensor and one row copy each: torch's pad_sequence is ~20x slower on long CPU waves.
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = seqs[0].new_full((len(seqs), int(lengths.max()), *seqs[0].shape[1:]), value)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = seq
    return out, lengths


def _prev_output(tokens: torch.Tensor, lengths: torch.Tensor, pad: int, eos: int) -> torch.Tensor:
    """fairseq's prev_output_tokens: `[</s>] + seq[:-1]` per row, right-padded like `tokens`."""
    prev = torch.full_like(tokens, pad)
    prev[:, 0] = eos
    prev[:, 1:] = tokens[:, :-1]
    prev[torch.arange(tokens.shape[1])[None, :] >= lengths[:, None]] = pad
    return prev


def collate(examples: Sequence[Example], task: str, pad: int, eos: int) -> dict[str, Any]:
    """Pad a list of examples into the batch dict (docs/internals.md, Batches): audio padded with 0
    (padding mask True at padding), tokens right-padded with `pad`; absent keys are None.
    `prefix` (B, 1) is the forced decoder prefix (the language tag) or None when the data has no tags.
    `ntokens` counts every non-pad token of the task's decoder target, tag and </s> included."""
    batch: dict[str, Any] = {"ids": [e.id for e in examples], "task": task}
    for key in (
        "audio",
        "audio_lengths",
        "audio_padding_mask",
        "transcript",
        "prev_transcript",
        "transcript_lengths",
        "target",
        "prev_target",
        "target_lengths",
    ):
        batch[key] = None
    if examples[0].audio is not None:
        batch["audio"], lengths = _right_pad([e.audio for e in examples], 0.0)
        batch["audio_lengths"] = lengths
        batch["audio_padding_mask"] = torch.arange(batch["audio"].shape[1])[None, :] >= lengths[:, None]
    for name in ("transcript", "target"):
        seqs = [getattr(e, name) for e in examples]
        if seqs[0] is None:
            continue
        tokens, lengths = _right_pad(seqs, pad)
        batch[name], batch[f"{name}_lengths"] = tokens, lengths
        batch[f"prev_{name}"] = _prev_output(tokens, lengths, pad, eos)
    has_prefix = examples[0].prefix is not None
    batch["prefix"] = torch.tensor([[e.prefix] for e in examples], dtype=torch.long) if has_prefix else None
    decoder_target = get_task(task).decoder_target
    counted = batch[f"{decoder_target}_lengths"] if decoder_target else None
    batch["ntokens"] = int(counted.sum()) if counted is not None else 0
    return batch


def load_datasets(
    manifest: str | os.PathLike, tasks: Sequence[str], vocab: TokenVocab, **kwargs: Any
) -> dict[str, SpeechTextDataset]:
    """One dataset per task from one manifest (read once): the manifest serves every task."""
    rows = read_manifest(manifest)
    return {task: SpeechTextDataset(rows, task, vocab, manifest=Path(manifest), **kwargs) for task in tasks}

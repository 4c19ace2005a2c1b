"""Self-supervised wav2vec 2.0 pre-training (`speechxl pretrain-w2v`) on the audio of a manifest.

HF `Wav2Vec2ForPreTraining` supplies the model, quantizer and loss (contrastive + weighted diversity);
span masks and negatives come from HF's `_compute_mask_indices` / `_sample_negative_indices`. Around it,
as in fairseq's wav2vec2 recipe: batches of similar-length utterances cropped to the shortest one (so
there is no padding, which would shift the group-norm statistics), Adam with linear warmup then linear
decay, the CNN gradient scaled by `feature_grad_mult`, and the Gumbel temperature annealed per update
(max(2.0 · 0.999995^u, 0.5)). Not reproduced: fairseq's L2 penalty on the CNN features.

Checkpoints: `<out>/checkpoints/ckpt-<update>/` with config.json + model.safetensors (an HF Wav2Vec2Model
directory: `Wav2Vec2Encoder.from_pretrained(<out>/checkpoints/last)` loads it), pretrain_heads.safetensors
(quantizer and projections) and trainer.pt (optimizer and data position). A run resumes from `last`.
Randomness is seeded from (seed, update), so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining, Wav2Vec2Model
from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

from speechxl.checkpoint import (
    CHECKPOINTS,
    TMP_PREFIX,
    TRAINER_FILE,
    clean_incomplete,
    latest_checkpoint,
    load_trainer_state,
    point_link,
    prune_checkpoints,
)
from speechxl.data.audio import load_audio
from speechxl.data.manifest import read_manifest
from speechxl.errors import CheckpointError, DataError
from speechxl.modules.wav2vec2 import GradMultiply, conv_output_lengths, normalize_waveform, wav2vec2_config
from speechxl.train.logs import RunLog

HEADS_FILE = "pretrain_heads.safetensors"
# What fairseq's wav2vec2 pre-training uses on top of the architecture presets.
PRETRAIN_DEFAULTS = {"mask_time_prob": 0.65, "mask_time_length": 10, "diversity_loss_weight": 0.1, "layerdrop": 0.05}


@dataclass
class PretrainOptions:
    max_updates: int = 400_000
    lr: float = 5e-4
    warmup_updates: int | None = None  # None: 8% of max_updates (fairseq base: 32k of 400k)
    max_tokens: int = 1_400_000  # audio samples per batch (after cropping)
    max_sample_size: int = 250_000  # crop longer utterances (fairseq: 250k samples)
    feature_grad_mult: float = 0.1
    weight_decay: float = 0.01
    clip_norm: float = 0.0  # 0: no clipping (fairseq base)
    gumbel_temperature: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    save_interval_updates: int = 10_000
    keep_last: int = 2
    seed: int = 1


def model_config(config: str) -> Wav2Vec2Config:
    """A preset name (tiny, base, large) or a YAML file: `preset:` plus any Wav2Vec2Config fields."""
    if config.endswith((".yaml", ".yml")):
        with open(config, encoding="utf-8") as f:
            settings = yaml.safe_load(f) or {}
        if not isinstance(settings, dict):
            raise DataError(config, "expected a mapping of Wav2Vec2Config fields (and `preset`)")
        preset = settings.pop("preset", "base")
    else:
        preset, settings = config, {}
    return wav2vec2_config(preset, **{**PRETRAIN_DEFAULTS, **settings})


def pretrain_wav2vec2(
    manifest: str | os.PathLike, out: str | os.PathLike, *, config: str = "base", options: PretrainOptions | None = None
) -> dict[str, Any]:
    """Pre-train (or resume) into `out`; returns the last logged record plus the skip count."""
    opts = options or PretrainOptions()
    out = Path(out)
    clean_incomplete(out)
    resume_from = latest_checkpoint(out)
    if resume_from is not None:
        model = _load_pretraining_model(resume_from)
        trainer_state = load_trainer_state(resume_from)
    else:
        torch.manual_seed(opts.seed)  # the initial weights are part of what the seed fixes
        model = Wav2Vec2ForPreTraining(model_config(config))
        trainer_state = None
    cfg = model.config
    min_frames = 2 * cfg.mask_time_length  # room for at least one masked span plus negatives
    utterances, skipped = _utterances(manifest, cfg, min_frames)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    if opts.feature_grad_mult != 1.0:
        model.wav2vec2.feature_extractor.register_forward_hook(
            lambda _module, _inputs, output: GradMultiply.apply(output, opts.feature_grad_mult)
        )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=opts.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=opts.weight_decay
    )
    update, epoch, position = 0, 0, 0
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        update, epoch, position = trainer_state["update"], trainer_state["epoch"], trainer_state["position"]
    log = RunLog(out)
    log.truncate_after(update)
    warmup = opts.warmup_updates if opts.warmup_updates is not None else max(1, int(0.08 * opts.max_updates))
    record: dict[str, Any] = {}
    bar = tqdm(total=opts.max_updates, initial=update, desc="pretrain-w2v", unit="upd", dynamic_ncols=True)
    while update < opts.max_updates:
        batches = _batches(utterances, opts, epoch)
        if not batches:
            raise DataError(manifest, f"no usable audio ({skipped} utterances skipped as too short or text-only)")
        for index in range(position, len(batches)):
            lr = _learning_rate(update, opts.lr, warmup, opts.max_updates)
            for group in optimizer.param_groups:
                group["lr"] = lr
            start, floor, decay = opts.gumbel_temperature
            model.set_gumbel_temperature(max(start * decay**update, floor))
            record = _train_step(model, optimizer, batches[index], manifest, opts, update, device)
            update += 1
            record.update(type="train", update=update, epoch=epoch, lr=lr)
            log.write(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", contrastive=f"{record['contrastive_loss']:.3f}")
            done = update >= opts.max_updates
            if done or update % opts.save_interval_updates == 0:
                next_epoch, next_position = (epoch, index + 1) if index + 1 < len(batches) else (epoch + 1, 0)
                _save(out, model, optimizer, update, next_epoch, next_position, opts.keep_last)
            if done:
                break
        else:
            epoch, position = epoch + 1, 0
            continue
        break
    bar.close()
    log.close()
    if skipped:
        tqdm.write(f"pretrain-w2v: skipped {skipped} utterances (text-only or shorter than {min_frames} frames)")
    return {**record, "skipped": skipped, "checkpoint": str(out / CHECKPOINTS / "last")}


def _utterances(manifest: str | os.PathLike, cfg: Wav2Vec2Config, min_frames: int):
    """(manifest line, audio spec, samples) of rows with enough audio; the rest are counted as skipped."""
    rows = read_manifest(manifest)
    kept, skipped = [], 0
    for line, row in enumerate(rows, start=2):
        try:
            samples = int(row["n_frames"] or 0)
        except ValueError:
            raise DataError(manifest, f"n_frames {row['n_frames']!r} is not an integer", line) from None
        frames = int(conv_output_lengths(torch.tensor(samples), cfg.conv_kernel, cfg.conv_stride))
        if not row["audio"] or frames < min_frames:
            skipped += 1
            continue
        kept.append((line, row["audio"], samples))
    return kept, skipped


def _batches(utterances: list, opts: PretrainOptions, epoch: int) -> list[list]:
    """Length-sorted groups whose cropped size (count × longest, capped) fits `max_tokens`, shuffled."""
    order = sorted(utterances, key=lambda u: u[2])
    batches, current = [], []
    for utterance in order:
        size = min(utterance[2], opts.max_sample_size)
        if current and (len(current) + 1) * size > opts.max_tokens:
            batches.append(current)
            current = []
        current.append(utterance)
    if current:
        batches.append(current)
    rng = np.random.default_rng([opts.seed, epoch])
    return [batches[i] for i in rng.permutation(len(batches))]


def _learning_rate(update: int, peak: float, warmup: int, max_updates: int) -> float:
    """Linear warmup to `peak`, then linear decay to 0 at `max_updates` (fairseq polynomial_decay, power 1)."""
    if update < warmup:
        return peak * (update + 1) / warmup
    return peak * max(0.0, (max_updates - update) / max(1, max_updates - warmup))


def _train_step(
    model: Wav2Vec2ForPreTraining,
    optimizer: torch.optim.Optimizer,
    batch: list,
    manifest: str | os.PathLike,
    opts: PretrainOptions,
    update: int,
    device: torch.device,
) -> dict:
    # HF's mask / negative samplers draw from numpy's global RNG: seed it per update for exact resumes
    np.random.seed((opts.seed * 1_000_003 + update) % 2**32)
    torch.manual_seed(opts.seed * 1_000_003 + update)
    cfg = model.config
    wave = _load_cropped(batch, manifest, opts.max_sample_size).to(device)
    if getattr(cfg, "do_normalize", False):
        wave = normalize_waveform(wave)
    frames = int(conv_output_lengths(torch.tensor(wave.shape[1]), cfg.conv_kernel, cfg.conv_stride))
    mask = _compute_mask_indices((wave.shape[0], frames), cfg.mask_time_prob, cfg.mask_time_length, min_masks=2)
    negatives = _sample_negative_indices((wave.shape[0], frames), cfg.num_negatives, mask)
    output = model(
        wave,
        mask_time_indices=torch.from_numpy(mask).to(device),
        sampled_negative_indices=torch.from_numpy(negatives).long().to(device),
    )
    masked = float(mask.sum())
    optimizer.zero_grad(set_to_none=True)
    (output.loss / masked).backward()  # fairseq's sample_size: the number of masked frames
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip_norm or float("inf"))
    optimizer.step()
    return {
        "loss": output.loss.item() / masked,
        "contrastive_loss": output.contrastive_loss.item() / masked,
        "diversity_loss": output.diversity_loss.item() / masked,
        "masked_frames": masked,
        "perplexity": output.codevector_perplexity.item(),
        "grad_norm": float(grad_norm),
        "temperature": model.quantizer.temperature,
    }


def _load_cropped(batch: list, manifest: str | os.PathLike, max_sample_size: int) -> torch.Tensor:
    """Load the batch and crop every wave to the shortest (and to max_sample_size) at a random offset."""
    base_dir = os.path.dirname(os.path.abspath(manifest))
    waves = [load_audio(spec, base_dir, manifest=manifest, line=line) for line, spec, _ in batch]
    size = min(min(len(w) for w in waves), max_sample_size)
    crops = []
    for wave in waves:
        start = np.random.randint(0, len(wave) - size + 1)
        crops.append(torch.from_numpy(wave[start : start + size]))
    return torch.stack(crops)


def _save(
    out: Path,
    model: Wav2Vec2ForPreTraining,
    optimizer: torch.optim.Optimizer,
    update: int,
    epoch: int,
    position: int,
    keep_last: int,
) -> None:
    """Write ckpt-<update> atomically (temporary directory, fsync, rename), point `last` at it, prune."""
    root = out / CHECKPOINTS
    final = root / f"ckpt-{update}"
    if final.exists():  # a resumed run that re-reaches a saved update rewrites the same state
        shutil.rmtree(final)
    tmp = root / f"{TMP_PREFIX}ckpt-{update}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    model.wav2vec2.save_pretrained(tmp, safe_serialization=True)
    heads = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if not k.startswith("wav2vec2.")}
    save_file(heads, str(tmp / HEADS_FILE))
    torch.save(
        {"optimizer": optimizer.state_dict(), "update": update, "epoch": epoch, "position": position},
        tmp / TRAINER_FILE,
    )
    for path in [*tmp.iterdir(), tmp]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.rename(tmp, final)
    point_link(out, "last", final)
    prune_checkpoints(out, keep_last=keep_last, keep_best=0)


def _load_pretraining_model(directory: Path) -> Wav2Vec2ForPreTraining:
    config = Wav2Vec2Config.from_pretrained(directory)
    model = Wav2Vec2ForPreTraining(config)
    model.wav2vec2 = Wav2Vec2Model.from_pretrained(directory)
    missing, unexpected = model.load_state_dict(load_file(str(directory / HEADS_FILE)), strict=False)
    if unexpected or any(not key.startswith("wav2vec2.") for key in missing):
        raise CheckpointError(
            f"{directory / HEADS_FILE}: does not match the model (missing {missing}, unexpected {unexpected})"
        )
    return model

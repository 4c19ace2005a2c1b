"""The training loop: `train()` shows the steps; each helper below does one job.

Gradient normalisation follows fairseq: models return *summed* losses and a `sample_size`; the trainer sums
both over accumulation steps and DDP ranks and divides the gradients by the total, so an update does not
depend on how its global batch is split into micro-batches or processes.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch
from tqdm import tqdm

from speechxl.config import ExperimentConfig, TrainConfig, config_to_dict, dump_config, load_config
from speechxl.train import checkpoint as ckpt
from speechxl.train.batches import bleu_task, build_train_data, validation_tasks
from speechxl.train.distributed import (
    DistEnv, all_reduce_sum, barrier, broadcast_from_main, gather_objects, init_distributed, shutdown,
    sum_dicts_over_ranks,
)
from speechxl.train.logs import RunLog, summarize
from speechxl.train.optim import InverseSqrtSchedule, build_optimizer
from speechxl.train.stages import (
    INIT_PREVIOUS, Stage, apply_acoustic_freeze, apply_trainable, parse_stages, schedule_updates, stage_at,
    stage_starts, stage_train_config, total_updates,
)


class TrainData(Protocol):
    """Batches for one rank (speechxl.train.batches.LoaderData is the real one).

    Iterating gives the rest of the current epoch, the same number of batches on every rank; the
    position (`{"epoch", "consumed", ...}`) moves per batch handed out, so a state taken after an
    update resumes at the next batch. Iterating must not draw from the global RNGs.
    """

    def __iter__(self) -> Iterator[dict]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def valid_batches(self) -> Iterable[dict]: ...


@dataclass
class TrainState:
    """Where training stands; saved in trainer.pt with the optimizer and RNG states."""

    num_updates: int = 0
    epoch: int = 1
    best_bleu: float | None = None
    bad_validations: int = 0  # validations since the best BLEU, for `patience`
    log_sums: dict[str, float] = field(default_factory=dict)  # summed over ranks since the last log line
    stop: bool = False


@dataclass
class StageRun:
    """What the updates of one stage train with. A config without `stages` is one open-ended StageRun."""

    index: int
    stage: Stage | None  # None: the config has no `stages` section
    start: int  # global update count at which the stage began
    end: int | None  # global update count at which the next stage begins; None: the last (or only) stage
    train: TrainConfig  # train.* with the stage's overrides
    tasks: list[str]  # tasks validated on the dev split
    data: TrainData
    trained: torch.nn.Module  # the model, wrapped for DDP when distributed
    optimizer: torch.optim.Optimizer
    schedule: InverseSqrtSchedule
    scaler: torch.amp.GradScaler | None
    trainable: list[str]  # names of the parameters the optimizer updates

    @property
    def log_tags(self) -> dict[str, str]:
        return {"stage": self.stage.name} if self.stage is not None else {}


@dataclass
class Handover:
    """What a stage starts from: the previous stage's state at a boundary, or trainer.pt's on resume."""

    optimizer: dict | None = None
    scaler: dict | None = None
    trainable: list[str] | None = None  # the parameter names `optimizer` belongs to
    sampler: dict | None = None  # the data position; set only when resuming inside the stage


# ---------------------------------------------------------------------------------------------- the loop

def train(cfg: ExperimentConfig, *, model: torch.nn.Module | None = None, vocab=None,
          data: TrainData | None = None, vocab_files: list[Path] | None = None) -> TrainState:
    """Train per `cfg` (its `stages` in order, when it has them), resuming from `cfg.run_dir`'s last
    checkpoint when there is one.

    `model`, `vocab`, `data` are built from the config when not given (tests pass small ones); `data` only
    without stages, since every stage builds its own.
    """
    stages = parse_stages(cfg.stages, "config stages") if cfg.stages else []
    if stages and data is not None:
        raise ValueError("train(data=...) cannot be used with `stages`: each stage builds its own data")
    env = init_distributed(cfg.train.device)
    try:
        run_dir = Path(cfg.run_dir)
        seed_everything(cfg.train.seed, env.rank)  # before the model exists: its initial weights are drawn
        if vocab is None:
            vocab, vocab_files = load_vocab_from_config(cfg)
        if model is None:
            from speechxl.models import build_model

            model = build_model(model_config(cfg), vocab)
        resume_from = prepare_run_dir(run_dir, cfg, env)
        if resume_from is not None:
            init_weights(model, resume_from)
        elif cfg.train.init_from:
            init_weights(model, Path(cfg.train.init_from))
        model.to(env.device)
        state = TrainState()
        index, handover = resume(resume_from, stages, state, env) if resume_from is not None else (0, Handover())
        run = enter_stage(cfg, stages, index, state, model, vocab, env, handover, data)
        run_log = RunLog(run_dir) if env.is_main else None
        if run_log is not None and resume_from is not None:
            run_log.truncate_after(state.num_updates)

        max_update = run_max_update(cfg.train, stages)
        bar = tqdm(total=max_update or None, initial=state.num_updates, disable=not env.is_main,
                   desc="train", unit="upd", dynamic_ncols=True)
        saved_at = validated_at = state.num_updates if resume_from is not None else -1
        while True:
            state.epoch = run.data.state_dict()["epoch"]
            if finished(state, max_update, cfg.train.max_epoch):
                break
            stage_done = False
            for micro_batches in group_batches(run.data, run.train.update_freq):
                step_start = time.perf_counter()
                before_update(model, run, state.num_updates)
                logs = train_step(run.trained, model, micro_batches, run.optimizer, run.scaler, run.train, env)
                state.num_updates += 1
                lr = run.schedule.step_update(schedule_position(stages, state.num_updates))
                add_logs(state, logs)
                report_progress(bar, logs, lr, time.perf_counter() - step_start)
                if due(state.num_updates, run.train.log_every):
                    write_train_log(run_log, state, lr, env, run.log_tags)
                # max_update reached (max_epoch ends after the loop), or the stage's last update done
                at_end = finished(state, max_update, cfg.train.max_epoch)
                stage_done = run.end is not None and state.num_updates >= run.end
                metrics = None
                if due(state.num_updates, run.train.validate_every) or at_end or stage_done:
                    metrics = validate_and_track(model, run, vocab, state, env, run_log)
                    validated_at = state.num_updates
                if (due(state.num_updates, run.train.save_every) or (metrics or {}).get("improved")
                        or at_end or stage_done or state.stop):
                    save(run_dir, model, cfg, vocab_files, run, state, metrics, env)
                    saved_at = state.num_updates
                if at_end or stage_done or state.stop:
                    break
            if stage_done and not finished(state, max_update, cfg.train.max_epoch):
                run = enter_stage(cfg, stages, run.index + 1, state, model, vocab, env, handover_of(run), None)
        if saved_at != state.num_updates:  # the end of training is always validated and saved
            metrics = None
            if validated_at != state.num_updates:
                metrics = validate_and_track(model, run, vocab, state, env, run_log)
            save(run_dir, model, cfg, vocab_files, run, state, metrics, env)
        bar.close()
        if run_log is not None:
            run_log.close()
        return state
    finally:
        shutdown(env)


def train_from_config(config_path: str, overrides: list[str]) -> TrainState:
    """`speechxl train`: load the config (YAML + overrides) and train."""
    return train(load_config(config_path, overrides))


# ----------------------------------------------------------------------------------------------- set-up

def model_config(cfg: ExperimentConfig) -> dict:
    """The model section, with the loss settings of the train section the model's forward needs."""
    return {"label_smoothing": cfg.train.label_smoothing, "ignore_prefix_size": cfg.train.ignore_prefix_size,
            **cfg.model}


def vocab_path(cfg: ExperimentConfig) -> Path:
    return Path(cfg.data.vocab) if cfg.data.vocab else Path(cfg.data.manifest_dir) / ckpt.VOCAB_FILE


def load_vocab_from_config(cfg: ExperimentConfig):
    """The vocabulary and the files that a checkpoint must carry to rebuild it (spm.model, vocab.json)."""
    from speechxl.data.vocab import Vocab

    spm_path = vocab_path(cfg)
    pieces_path = spm_path.with_name(ckpt.PIECES_FILE)
    files = [spm_path] + ([pieces_path] if pieces_path.is_file() else [])
    return ckpt.load_vocab(spm_path.parent) if pieces_path.is_file() else Vocab.load(spm_path), files


def prepare_run_dir(run_dir: Path, cfg: ExperimentConfig, env: DistEnv) -> Path | None:
    """Clean an interrupted save, write config.yaml; returns the checkpoint to resume from, if any."""
    if env.is_main:
        ckpt.clean_incomplete(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ckpt.CONFIG_FILE).write_text(dump_config(cfg), encoding="utf-8")
    barrier(env)
    return ckpt.latest_checkpoint(run_dir)


def seed_everything(seed: int, rank: int) -> None:
    # Each rank draws its own dropout masks; the data order comes from the sampler's own seed.
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def init_weights(model: torch.nn.Module, directory: Path) -> None:
    """Load a checkpoint's weights: to resume, or to start a stage of a progressive schedule from another
    run (`train.init_from`; the optimizer then starts fresh)."""
    ckpt.load_state_into(model, ckpt.load_weights(directory / ckpt.MODEL_FILE), directory / ckpt.MODEL_FILE)


def wrap_for_ddp(model: torch.nn.Module, env: DistEnv, cfg: TrainConfig) -> torch.nn.Module:
    if not env.distributed:
        return model
    device_ids = [env.device.index] if env.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=cfg.find_unused_parameters)


def make_grad_scaler(cfg: TrainConfig, env: DistEnv) -> torch.amp.GradScaler | None:
    if cfg.amp != "none" and env.device.type != "cuda":
        raise RuntimeError(f"train.amp={cfg.amp} needs a CUDA device; this run is on {env.device}")
    return torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


# ----------------------------------------------------------------------------------------------- stages

def run_max_update(cfg: TrainConfig, stages: list[Stage]) -> int:
    """Updates of the whole run (0: no limit): the stages' total, cut short by train.max_update if lower."""
    limits = [n for n in (total_updates(stages) if stages else 0, cfg.max_update) if n > 0]
    return min(limits, default=0)


def schedule_position(stages: list[Stage], num_updates: int) -> int:
    """The update count the LR schedule sees: it restarts at stages that reset the optimizer."""
    return schedule_updates(stages, num_updates) if stages else num_updates


def stage_model(model: torch.nn.Module, stage: Stage, resuming_inside: bool, env: DistEnv) -> None:
    """A stage's starting weights (`init`) and trainable parameters (`trainable`)."""
    if stage.init != INIT_PREVIOUS and not resuming_inside:  # inside the stage, the checkpoint has the weights
        init_weights(model, Path(stage.init))
    counts = apply_trainable(model, stage)
    if env.is_main:
        tqdm.write(f"stage {stage.name}: tasks {stage.tasks}, {counts['trainable']:,} trainable and "
                   f"{counts['frozen']:,} frozen parameters")


def stage_optimizer(model: torch.nn.Module, stage: Stage | None, cfg: TrainConfig, handover: Handover,
                    trainable: list[str]) -> torch.optim.Optimizer:
    """A new optimizer over the trainable parameters, with the handed-over state when it still applies: always
    inside a stage; at a boundary unless the stage resets the optimizer or trains another parameter set."""
    optimizer = build_optimizer(model.parameters(), cfg)
    inside = handover.sampler is not None
    carry = handover.optimizer is not None and (
        inside or (stage is not None and not stage.reset_optimizer and handover.trainable == trainable))
    if carry:
        optimizer.load_state_dict(handover.optimizer)
        for group in optimizer.param_groups:  # a stage may change them; the saved state has the old ones
            group.update(betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    return optimizer


def enter_stage(cfg: ExperimentConfig, stages: list[Stage], index: int, state: TrainState, model: torch.nn.Module,
                vocab, env: DistEnv, handover: Handover, data: TrainData | None) -> StageRun:
    """Set up stage `index` (the whole run without stages) at `state.num_updates`: weights, trainable set,
    DDP wrapper, optimizer, LR schedule, scaler and data, from `handover`. Draws from no RNG."""
    stage = stages[index] if stages else None
    inside = handover.sampler is not None
    if stage is not None:
        stage_model(model, stage, inside, env)
        if not inside:  # each stage keeps its own best BLEU (stages validate different tasks) and patience
            state.best_bleu, state.bad_validations = None, 0
    train_cfg = stage_train_config(cfg.train, stage) if stage is not None else cfg.train
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = stage_optimizer(model, stage, train_cfg, handover, trainable)
    schedule = InverseSqrtSchedule(optimizer, lr=train_cfg.lr, warmup_updates=train_cfg.warmup_updates,
                                   warmup_init_lr=train_cfg.warmup_init_lr)
    schedule.step_update(schedule_position(stages, state.num_updates))
    scaler = make_grad_scaler(train_cfg, env)
    if scaler is not None and handover.scaler is not None:
        scaler.load_state_dict(handover.scaler)
    if data is None:
        # A seed per stage: a stage that trains the same tasks again sees them in another order.
        data = build_train_data(cfg, vocab, env, task_ratios=stage.tasks if stage is not None else None,
                                seed=cfg.train.seed + index)
    if inside:
        data.load_state_dict(handover.sampler)
    starts = stage_starts(stages) if stages else [0]
    return StageRun(index=index, stage=stage, start=starts[index],
                    end=starts[index + 1] if index + 1 < len(starts) else None, train=train_cfg,
                    tasks=validation_tasks(stage.tasks) if stage is not None else list(cfg.data.tasks),
                    data=data, trained=wrap_for_ddp(model, env, train_cfg), optimizer=optimizer,
                    schedule=schedule, scaler=scaler, trainable=trainable)


def handover_of(run: StageRun) -> Handover:
    """What the next stage may carry over from `run` (not its data position: each stage has its own data)."""
    return Handover(optimizer=run.optimizer.state_dict(), trainable=run.trainable,
                    scaler=run.scaler.state_dict() if run.scaler is not None else None)


def resume(directory: Path, stages: list[Stage], state: TrainState, env: DistEnv) -> tuple[int, Handover]:
    """Restore trainer.pt's counters and this rank's RNGs; returns the stage to continue and its handover.

    A checkpoint saved at a stage boundary belongs to the stage before: the next stage then starts as in an
    uninterrupted run (fresh data position, optimizer carried per its rules). Set-up draws from no RNG, so
    restoring the RNGs first is exact in both cases.
    """
    saved = load_resume_state(directory, env)
    restore_progress(saved, state, env)
    set_rng_state(saved["rng"][env.rank])
    index = stage_at(stages, state.num_updates)[0] if stages else 0
    inside = saved.get("stage", 0) == index
    return index, Handover(optimizer=saved["optimizer"], scaler=saved["scaler"], trainable=saved.get("trainable"),
                           sampler=saved["sampler"] if inside else None)


def before_update(model: torch.nn.Module, run: StageRun, num_updates: int) -> None:
    """wav2vec2's freeze phase: a stage's `freeze_acoustic_updates` counts updates within the stage, else the
    model's own `w2v_freeze_updates` counts updates of the run."""
    if run.stage is not None and run.stage.freeze_acoustic_updates is not None:
        apply_acoustic_freeze(model, run.stage, num_updates - run.start)
    elif hasattr(model, "set_update"):
        model.set_update(num_updates)


# ----------------------------------------------------------------------------------------------- update

def group_batches(batches: Iterable[dict], update_freq: int) -> Iterator[list[dict]]:
    """Micro-batches grouped per update; the epoch's last group may be shorter."""
    group: list[dict] = []
    for batch in batches:
        group.append(batch)
        if len(group) == update_freq:
            yield group
            group = []
    if group:
        yield group


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def train_step(trained: torch.nn.Module, model: torch.nn.Module, micro_batches: list[dict],
               optimizer: torch.optim.Optimizer, scaler, cfg: TrainConfig, env: DistEnv) -> dict[str, float]:
    """One update: forward/backward every micro-batch, normalise by the global sample size, clip, step."""
    model.train()
    logs: dict[str, float] = {}
    sample_size = 0.0
    for index, batch in enumerate(micro_batches):
        # DDP all-reduces gradients only on the last micro-batch of the update.
        last = index == len(micro_batches) - 1
        sync = nullcontext() if last or not env.distributed else trained.no_sync()
        with sync:
            with autocast(cfg, env.device):
                out = trained(to_device(batch, env.device))
            loss = out["loss"]
            (scaler.scale(loss) if scaler is not None else loss).backward()
        sample_size += float(out["sample_size"])
        for key, value in {**out.get("logs", {}), "loss": loss.item(), "sample_size": float(out["sample_size"])}.items():
            logs[key] = logs.get(key, 0.0) + float(value)
    (total_sample_size,) = all_reduce_sum([sample_size], env)
    if scaler is not None:
        scaler.unscale_(optimizer)
    # DDP averaged the gradients over ranks; undo that and divide by the global sample size instead.
    scale = env.world_size / max(total_sample_size, 1.0)
    params = [p for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_([p.grad for p in params], scale)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    logs["gnorm_sum"] = float(grad_norm) / env.world_size  # summed over ranks -> the (shared) norm
    logs["updates"] = 1.0 / env.world_size
    return logs


def finished(state: TrainState, max_update: int, max_epoch: int) -> bool:
    return (state.stop or (max_update > 0 and state.num_updates >= max_update)
            or (max_epoch > 0 and state.epoch > max_epoch))


def due(num_updates: int, every: int) -> bool:
    return every > 0 and num_updates % every == 0


# ----------------------------------------------------------------------------------------------- logging

def add_logs(state: TrainState, logs: dict[str, float]) -> None:
    """Accumulate this rank's logs; they are summed over ranks when a line is written."""
    for key, value in logs.items():
        state.log_sums[key] = state.log_sums.get(key, 0.0) + value


def report_progress(bar: tqdm, logs: dict[str, float], lr: float, seconds: float) -> None:
    if bar.disable:
        return
    ntokens = logs.get("ntokens", logs.get("sample_size", 0.0))
    bar.set_postfix(loss=f"{logs['loss'] / max(logs['sample_size'], 1e-9):.3f}", lr=f"{lr:.2e}",
                    tok_s=f"{ntokens / max(seconds, 1e-9):.0f}", refresh=False)
    bar.update(1)


def write_train_log(run_log: RunLog | None, state: TrainState, lr: float, env: DistEnv,
                    tags: dict[str, str]) -> None:
    sums = sum_dicts_over_ranks(state.log_sums, env)
    state.log_sums = {}
    if run_log is None:
        return
    updates = max(sums.pop("updates", 1.0), 1e-9)
    record = {"type": "train", "update": state.num_updates, "epoch": state.epoch, **tags, **summarize(sums),
              "gnorm": sums.get("gnorm_sum", 0.0) / updates, "lr": lr}
    run_log.write(record)


# ----------------------------------------------------------------------------------------------- validation

@torch.no_grad()
def validate(model: torch.nn.Module, data: TrainData, vocab, cfg: TrainConfig, device: torch.device,
             bleu_task: str | None) -> dict:
    """Validation loss over the whole valid split, and BLEU of `valid_beam` search on up to
    `valid_max_sentences` of its `bleu_task` batches (references: the decoded targets)."""
    from speechxl.eval.bleu import bleu
    from speechxl.inference.search import beam_search

    model.eval()
    sums: dict[str, float] = {}
    hyps: list[str] = []
    refs: list[str] = []
    for batch in data.valid_batches():
        batch = to_device(batch, device)
        out = model(batch)
        for key, value in {**out.get("logs", {}), "loss": out["loss"].item(),
                           "sample_size": float(out["sample_size"])}.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        if batch["task"] != bleu_task or (cfg.valid_max_sentences and len(refs) >= cfg.valid_max_sentences):
            continue
        targets = batch["target"]
        prefix = targets[:, : cfg.ignore_prefix_size] if cfg.ignore_prefix_size > 0 else None
        # Cap the search length from the references: validation only ranks checkpoints, and an
        # untrained model would otherwise run to the search's default limit.
        max_len = int(batch["target_lengths"].max()) * 2 + 10
        for hypotheses, target in zip(beam_search(model, batch, beam=cfg.valid_beam, max_len_a=0.0,
                                                  max_len_b=max_len, prefix=prefix), targets.tolist()):
            hyps.append(vocab.decode(hypotheses[0].tokens))
            refs.append(vocab.decode(target))
    metrics = {"type": "valid", **summarize(sums)}
    if refs:
        scores = bleu(hyps, refs)
        metrics.update(bleu=scores["bleu"], bleu_signature=scores["signature"], bleu_sentences=len(refs))
    return metrics


def validate_and_track(model: torch.nn.Module, run: StageRun, vocab, state: TrainState, env: DistEnv,
                       run_log: RunLog | None) -> dict:
    """Validate on the main rank (the others wait), track the best BLEU and patience on every rank."""
    cfg = run.train
    metrics = (validate(model, run.data, vocab, cfg, env.device, bleu_task(run.tasks)) if env.is_main else None)
    metrics = broadcast_from_main(metrics, env)
    bleu_score = metrics.get("bleu")
    metrics["improved"] = bleu_score is not None and (state.best_bleu is None or bleu_score > state.best_bleu)
    if metrics["improved"]:
        state.best_bleu, state.bad_validations = bleu_score, 0
    elif bleu_score is not None:
        state.bad_validations += 1
        state.stop = cfg.patience > 0 and state.bad_validations >= cfg.patience
    if run_log is not None:
        run_log.write({**metrics, "update": state.num_updates, "epoch": state.epoch, **run.log_tags,
                       "best_bleu": state.best_bleu})
    return metrics


# ----------------------------------------------------------------------------------------------- checkpoints

def rng_state() -> dict[str, Any]:
    """Every RNG a step can draw from, as tensors and plain containers (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    return {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"], "key": np_state["state"]["key"].numpy().astype(np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainer_state(state: TrainState, run: StageRun, env: DistEnv) -> dict | None:
    """trainer.pt content; collective (every rank's RNG state is gathered), returns None off the main rank."""
    rng = gather_objects(rng_state(), env)
    log_sums = sum_dicts_over_ranks(state.log_sums, env)
    if not env.is_main:
        return None
    return {"num_updates": state.num_updates, "epoch": state.epoch, "sampler": run.data.state_dict(),
            "best_bleu": state.best_bleu, "bad_validations": state.bad_validations, "log_sums": log_sums,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "rng": rng, "world_size": env.world_size, "stage": run.index, "trainable": run.trainable}


def checkpoint_config(model: torch.nn.Module, cfg: ExperimentConfig) -> dict:
    """The config saved in a checkpoint; a model with `checkpoint_config()` writes its own model section, one
    that rebuilds it without outside files (XSTNet: the wav2vec2 config instead of `w2v_path`)."""
    config = config_to_dict(cfg)
    if hasattr(model, "checkpoint_config"):
        config["model"] = model.checkpoint_config()
    return config


def save(run_dir: Path, model: torch.nn.Module, cfg: ExperimentConfig, vocab_files: list[Path] | None,
         run: StageRun, state: TrainState, metrics: dict | None, env: DistEnv) -> None:
    """Write checkpoints/ckpt-<update>, point `last` (and `best` on a better BLEU) at it, prune old ones."""
    resumable = trainer_state(state, run, env)
    if env.is_main:
        directory = run_dir / ckpt.CHECKPOINTS / f"ckpt-{state.num_updates}"
        if not directory.exists():  # the final save can coincide with a periodic one
            kept_metrics = {k: v for k, v in (metrics or {}).items() if k not in ("type", "improved")}
            ckpt.write_checkpoint(directory, model_state=model.state_dict(), config=checkpoint_config(model, cfg),
                                  vocab_files=list(vocab_files or []), trainer_state=resumable,
                                  metrics={"update": state.num_updates, **run.log_tags, **kept_metrics})
        ckpt.point_link(run_dir, "last", directory)
        if metrics is not None and metrics.get("improved"):
            ckpt.point_link(run_dir, "best", directory)
        ckpt.prune_checkpoints(run_dir, keep_last=cfg.train.keep_last, keep_best=cfg.train.keep_best)
    barrier(env)


def load_resume_state(directory: Path, env: DistEnv) -> dict:
    """trainer.pt of the checkpoint to resume from, checked against this run's process count."""
    saved = ckpt.load_trainer_state(directory)
    if saved["world_size"] != env.world_size:
        # The sampler position and the per-rank RNG states are per process.
        raise ckpt.CheckpointError(f"{directory}: saved by {saved['world_size']} processes, resumed with "
                                   f"{env.world_size}; exact resume needs the same number")
    return saved


def restore_progress(saved: dict, state: TrainState, env: DistEnv) -> None:
    """The counters of trainer.pt into `state` (the optimizer, scaler and data position go to enter_stage)."""
    state.num_updates, state.epoch = saved["num_updates"], saved["epoch"]
    state.best_bleu, state.bad_validations = saved["best_bleu"], saved["bad_validations"]
    state.log_sums = dict(saved["log_sums"]) if env.is_main else {}

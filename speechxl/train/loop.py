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

from speechxl import checkpoint as ckpt
from speechxl.config import (
    INIT_PREVIOUS,
    ExperimentConfig,
    Stage,
    TrainConfig,
    config_to_dict,
    dump_config,
    load_config,
    parse_stages,
    schedule_updates,
    stage_at,
    stage_starts,
    stage_train_config,
    total_updates,
)
from speechxl.errors import CheckpointError, DataError, TrainingError
from speechxl.inference.decode import DecodeOptions, batch_references, decode_batch, score_output
from speechxl.tasks import decoded_task
from speechxl.train.batches import build_train_data, validation_tasks
from speechxl.train.distributed import (
    DistEnv,
    all_reduce_sum,
    barrier,
    broadcast_from_main,
    gather_objects,
    init_distributed,
    shutdown,
    sum_dicts_over_ranks,
)
from speechxl.train.logs import RunLog, summarize
from speechxl.train.optim import InverseSqrtSchedule, build_optimizer
from speechxl.train.stages import apply_acoustic_freeze, apply_trainable


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
    best: float | None = None  # the best value of train.best_metric so far (in this stage)
    bad_validations: int = 0  # validations since the best, for `patience`
    skipped_updates: int = 0  # updates skipped for a non-finite loss or gradient norm
    skipped_in_a_row: int = 0
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


def train(
    cfg: ExperimentConfig,
    *,
    model: torch.nn.Module | None = None,
    vocab=None,
    data: TrainData | None = None,
    vocab_files: list[Path] | None = None,
    until_stage: str | None = None,
) -> TrainState:
    """Train per `cfg` (its `stages` in order, when it has them), resuming from `cfg.run_dir`'s last
    checkpoint when there is one. `until_stage` (a stage's name or number from 1) stops after that stage:
    a later call without it resumes into the next one.

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

            model = build_model(cfg.model, vocab)
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

        max_update = run_max_update(cfg.train, stages, until_stage)
        bar = tqdm(
            total=max_update or None,
            initial=state.num_updates,
            disable=not env.is_main,
            desc="train",
            unit="upd",
            dynamic_ncols=True,
        )
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
                if logs.get("skipped"):
                    skip_update(state, logs, micro_batches, run, env, run_log)
                    continue
                state.skipped_in_a_row = 0
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
                if (
                    due(state.num_updates, run.train.save_every)
                    or (metrics or {}).get("improved")
                    or at_end
                    or stage_done
                    or state.stop
                ):
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


def train_from_config(config_path: str, overrides: list[str], until_stage: str | None = None) -> TrainState:
    """`speechxl train`: load the config (YAML + overrides) and train."""
    return train(load_config(config_path, overrides), until_stage=until_stage)


# ----------------------------------------------------------------------------------------------- set-up


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
        model, device_ids=device_ids, find_unused_parameters=cfg.find_unused_parameters
    )


def compile_for_training(trained: torch.nn.Module, cfg: TrainConfig, env: DistEnv) -> torch.nn.Module:
    """`train.compile`: the (DDP-wrapped) model under torch.compile; CUDA only."""
    if not cfg.compile:
        return trained
    if env.device.type != "cuda":
        raise RuntimeError(
            f"train.compile=true needs a CUDA device; this run is on {env.device} (on CPU the packed rows and "
            "per-utterance attention break the graph into pieces and compiling costs more than it saves)"
        )
    return torch.compile(trained)


def make_grad_scaler(cfg: TrainConfig, env: DistEnv) -> torch.amp.GradScaler | None:
    if cfg.amp != "none" and env.device.type != "cuda":
        raise RuntimeError(f"train.amp={cfg.amp} needs a CUDA device; this run is on {env.device}")
    return torch.amp.GradScaler("cuda") if cfg.amp == "fp16" else None


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.amp == "none":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if cfg.amp == "bf16" else torch.float16)


# ----------------------------------------------------------------------------------------------- stages


def run_max_update(cfg: TrainConfig, stages: list[Stage], until_stage: str | None = None) -> int:
    """Updates of the whole run (0: no limit): the stages' total, cut short by train.max_update if lower,
    and by the end of `until_stage` when given."""
    limits = [n for n in (total_updates(stages) if stages else 0, cfg.max_update) if n > 0]
    if until_stage is not None:
        limits.append(stage_end(stages, until_stage))
    return min(limits, default=0)


def stage_end(stages: list[Stage], ref: str) -> int:
    """The update at which stage `ref` (its name, or its number from 1) ends; 0 for an open-ended last stage."""
    names = [stage.name for stage in stages]
    if ref in names:
        index = names.index(ref)
    elif ref.isdigit() and 1 <= int(ref) <= len(stages):
        index = int(ref) - 1
    else:
        known = ", ".join(f"{i} ({n})" for i, n in enumerate(names, 1)) or "none: the config has no stages"
        raise DataError("--until-stage", f"no stage {ref!r}; stages: {known}")
    if stages[index].max_update == 0:
        return 0
    return stage_starts(stages)[index] + stages[index].max_update


def schedule_position(stages: list[Stage], num_updates: int) -> int:
    """The update count the LR schedule sees: it restarts at stages that reset the optimizer."""
    return schedule_updates(stages, num_updates) if stages else num_updates


def stage_model(model: torch.nn.Module, stage: Stage, resuming_inside: bool, env: DistEnv) -> None:
    """A stage's starting weights (`init`) and trainable parameters (`trainable`)."""
    if stage.init != INIT_PREVIOUS and not resuming_inside:  # inside the stage, the checkpoint has the weights
        init_weights(model, Path(stage.init))
    counts = apply_trainable(model, stage)
    if env.is_main:
        tqdm.write(
            f"stage {stage.name}: tasks {stage.tasks}, {counts['trainable']:,} trainable and "
            f"{counts['frozen']:,} frozen parameters"
        )


def stage_optimizer(
    model: torch.nn.Module, stage: Stage | None, cfg: TrainConfig, handover: Handover, trainable: list[str]
) -> torch.optim.Optimizer:
    """A new optimizer over the trainable parameters, with the handed-over state when it still applies: always
    inside a stage; at a boundary unless the stage resets the optimizer or trains another parameter set."""
    optimizer = build_optimizer(model.parameters(), cfg)
    inside = handover.sampler is not None
    carry = handover.optimizer is not None and (
        inside or (stage is not None and not stage.reset_optimizer and handover.trainable == trainable)
    )
    if carry:
        optimizer.load_state_dict(handover.optimizer)
        for group in optimizer.param_groups:  # a stage may change them; the saved state has the old ones
            group.update(betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    return optimizer


def enter_stage(
    cfg: ExperimentConfig,
    stages: list[Stage],
    index: int,
    state: TrainState,
    model: torch.nn.Module,
    vocab,
    env: DistEnv,
    handover: Handover,
    data: TrainData | None,
) -> StageRun:
    """Set up stage `index` (the whole run without stages) at `state.num_updates`: weights, trainable set,
    DDP wrapper, optimizer, LR schedule, scaler and data, from `handover`. Draws from no RNG."""
    stage = stages[index] if stages else None
    inside = handover.sampler is not None
    if stage is not None:
        stage_model(model, stage, inside, env)
        if not inside:  # each stage keeps its own best (stages validate different tasks) and patience
            state.best, state.bad_validations = None, 0
    train_cfg = stage_train_config(cfg.train, stage) if stage is not None else cfg.train
    model.label_smoothing = train_cfg.label_smoothing
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    optimizer = stage_optimizer(model, stage, train_cfg, handover, trainable)
    schedule = InverseSqrtSchedule(
        optimizer, lr=train_cfg.lr, warmup_updates=train_cfg.warmup_updates, warmup_init_lr=train_cfg.warmup_init_lr
    )
    schedule.step_update(schedule_position(stages, state.num_updates))
    scaler = make_grad_scaler(train_cfg, env)
    if scaler is not None and handover.scaler is not None:
        scaler.load_state_dict(handover.scaler)
    if data is None:
        # A seed per stage: a stage that trains the same tasks again sees them in another order.
        data = build_train_data(
            cfg, vocab, env, task_ratios=stage.tasks if stage is not None else None, seed=cfg.train.seed + index
        )
    if inside:
        data.load_state_dict(handover.sampler)
    starts = stage_starts(stages) if stages else [0]
    return StageRun(
        index=index,
        stage=stage,
        start=starts[index],
        end=starts[index + 1] if index + 1 < len(starts) else None,
        train=train_cfg,
        tasks=validation_tasks(stage.tasks) if stage is not None else list(cfg.data.tasks),
        data=data,
        trained=compile_for_training(wrap_for_ddp(model, env, train_cfg), train_cfg, env),
        optimizer=optimizer,
        schedule=schedule,
        scaler=scaler,
        trainable=trainable,
    )


def handover_of(run: StageRun) -> Handover:
    """What the next stage may carry over from `run` (not its data position: each stage has its own data)."""
    return Handover(
        optimizer=run.optimizer.state_dict(),
        trainable=run.trainable,
        scaler=run.scaler.state_dict() if run.scaler is not None else None,
    )


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
    return index, Handover(
        optimizer=saved["optimizer"],
        scaler=saved["scaler"],
        trainable=saved.get("trainable"),
        sampler=saved["sampler"] if inside else None,
    )


def before_update(model: torch.nn.Module, run: StageRun, num_updates: int) -> None:
    """The model's update-dependent behaviour, and the acoustic encoder's freeze phase
    (`train.freeze_acoustic_updates`, counted within the stage)."""
    model.set_update(num_updates)
    apply_acoustic_freeze(model, run.train.freeze_acoustic_updates, num_updates - run.start)


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


def train_step(
    trained: torch.nn.Module,
    model: torch.nn.Module,
    micro_batches: list[dict],
    optimizer: torch.optim.Optimizer,
    scaler,
    cfg: TrainConfig,
    env: DistEnv,
) -> dict[str, float]:
    """One update: forward/backward every micro-batch, normalise by the global sample size, clip, step.

    A non-finite loss (on any rank) or gradient norm leaves parameters, optimizer and schedule untouched:
    the logs then say `skipped` and why. (With fp16, an infinite gradient is the GradScaler's to handle.)"""
    model.train()
    logs: dict[str, float] = {}
    sample_size = 0.0
    finite = True
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
        finite = finite and math.isfinite(loss.item())
        for key, value in {
            **out.get("logs", {}),
            "loss": loss.item(),
            "sample_size": float(out["sample_size"]),
        }.items():
            logs[key] = logs.get(key, 0.0) + float(value)
    total_sample_size, bad_ranks = all_reduce_sum([sample_size, 0.0 if finite else 1.0], env)
    if scaler is not None:
        scaler.unscale_(optimizer)
    # DDP averaged the gradients over ranks; undo that and divide by the global sample size instead.
    scale = env.world_size / max(total_sample_size, 1.0)
    params = [p for p in model.parameters() if p.grad is not None]
    torch._foreach_mul_([p.grad for p in params], scale)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
    reason = (
        "non-finite loss"
        if bad_ranks
        else "non-finite gradient norm"
        if scaler is None and not math.isfinite(float(grad_norm))
        else None
    )
    if reason is not None:
        optimizer.zero_grad(set_to_none=True)
        return {"skipped": 1.0, "reason": reason}
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    logs["gnorm_sum"] = float(grad_norm) / env.world_size  # summed over ranks -> the (shared) norm
    logs["updates"] = 1.0 / env.world_size
    return logs


def skip_update(
    state: TrainState, logs: dict, micro_batches: list[dict], run: StageRun, env: DistEnv, run_log: RunLog | None
) -> None:
    """Count and log an update skipped for a non-finite loss or gradient; too many in a row stop the run."""
    state.skipped_updates += 1
    state.skipped_in_a_row += 1
    ids = [utterance for batch in micro_batches for utterance in batch["ids"]]
    if env.is_main:
        tqdm.write(
            f"update {state.num_updates + 1} skipped: {logs['reason']} (this rank's utterances: "
            f"{', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''})"
        )
    if run_log is not None:
        run_log.write(
            {
                "type": "skipped",
                "update": state.num_updates,
                "reason": logs["reason"],
                "ids": ids,
                "skipped_updates": state.skipped_updates,
                **run.log_tags,
            }
        )
    if state.skipped_in_a_row >= run.train.max_bad_updates:
        raise TrainingError(
            f"stopping: {state.skipped_in_a_row} updates in a row were skipped for a non-finite "
            f"loss or gradient norm (train.max_bad_updates={run.train.max_bad_updates}; last: "
            f"{logs['reason']}, utterances {', '.join(ids[:10])}); lower train.lr, check these "
            f"utterances, or train in bf16 rather than fp16"
        )


def finished(state: TrainState, max_update: int, max_epoch: int) -> bool:
    return (
        state.stop
        or (max_update > 0 and state.num_updates >= max_update)
        or (max_epoch > 0 and state.epoch > max_epoch)
    )


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
    bar.set_postfix(
        loss=f"{logs['loss'] / max(logs['sample_size'], 1e-9):.3f}",
        lr=f"{lr:.2e}",
        tok_s=f"{ntokens / max(seconds, 1e-9):.0f}",
        refresh=False,
    )
    bar.update(1)


def write_train_log(run_log: RunLog | None, state: TrainState, lr: float, env: DistEnv, tags: dict[str, str]) -> None:
    sums = sum_dicts_over_ranks(state.log_sums, env)
    state.log_sums = {}
    if run_log is None:
        return
    updates = max(sums.pop("updates", 1.0), 1e-9)
    record = {
        "type": "train",
        "update": state.num_updates,
        "epoch": state.epoch,
        **tags,
        **summarize(sums),
        "gnorm": sums.get("gnorm_sum", 0.0) / updates,
        "lr": lr,
        "time": round(time.time(), 1),
    }
    run_log.write(record)


# ----------------------------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(
    model: torch.nn.Module, data: TrainData, vocab, cfg: TrainConfig, device: torch.device, tasks: list[str]
) -> dict:
    """Validation loss over the whole valid split, and the metrics of `valid_beam` search (the one decode path)
    on up to `valid_max_sentences` of the decoded task's batches (speechxl.tasks.decoded_task; references:
    the batches' own token sequences)."""
    model.eval()
    task = decoded_task(tasks)
    sums: dict[str, float] = {}
    hyps: dict[str, list[str]] = {}
    refs: dict[str, list[str]] = {}
    decoded = 0
    for batch in data.valid_batches():
        batch = to_device(batch, device)
        out = model(batch)
        for key, value in {
            **out.get("logs", {}),
            "loss": out["loss"].item(),
            "sample_size": float(out["sample_size"]),
        }.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        if (
            task is None
            or batch["task"] != task.name
            or (cfg.valid_max_sentences and decoded >= cfg.valid_max_sentences)
        ):
            continue
        # Cap the search length from the references: validation only ranks checkpoints, and an
        # untrained model would otherwise run to the search's default limit.
        max_len = int(batch[f"{task.decoder_target}_lengths"].max()) * 2 + 10
        options = DecodeOptions(beam=cfg.valid_beam, max_len_a=0.0, max_len_b=max_len)
        outputs = decode_batch(model, batch, vocab, task, options)
        for name, lines in batch_references(batch, vocab, outputs[0]).items():
            refs.setdefault(name, []).extend(lines)
            hyps.setdefault(name, []).extend(texts[name] for texts in outputs)
        decoded += len(outputs)
    metrics = {"type": "valid", **summarize(sums)}
    for name in refs:
        scores = score_output(name, hyps[name], refs[name])
        prefix = "" if name == task.output else f"{name}_"
        metrics.update({f"{prefix}{key}": scores[key] for key in ("bleu", "chrf", "wer") if key in scores})
        if "signature" in scores:
            metrics[f"{prefix}bleu_signature"] = scores["signature"]
    if refs:
        metrics["decoded_sentences"] = decoded
    return metrics


# Figures where lower is better; every other known figure (bleu, chrf, accuracy) is better higher.
_LOWER_IS_BETTER = ("loss", "wer", "ppl")


def best_metric(cfg: TrainConfig, metrics: dict, tasks: list[str]) -> tuple[str, bool]:
    """(name, higher_is_better) of the figure that ranks checkpoints: train.best_metric, or for `auto` the
    decoded task's first metric (bleu; wer for ASR), else the validation loss."""
    name = cfg.best_metric
    if name == "auto":
        task = decoded_task(tasks)
        name = task.metrics[0] if task is not None and task.metrics[0] in metrics else "loss"
    if name not in metrics:
        figures = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise DataError(
            "train.best_metric", f"{name!r} is not a figure of this validation; figures: {', '.join(figures)}"
        )
    return name, not any(name == low or name.endswith(f"_{low}") for low in _LOWER_IS_BETTER)


def validate_and_track(
    model: torch.nn.Module, run: StageRun, vocab, state: TrainState, env: DistEnv, run_log: RunLog | None
) -> dict:
    """Validate on the main rank (the others wait), track the best `train.best_metric` and patience on every
    rank."""
    cfg = run.train
    metrics = validate(model, run.data, vocab, cfg, env.device, run.tasks) if env.is_main else None
    metrics = broadcast_from_main(metrics, env)
    name, higher = best_metric(cfg, metrics, run.tasks)
    value = float(metrics[name])
    metrics["improved"] = state.best is None or (value > state.best if higher else value < state.best)
    metrics["best_metric"] = {"name": name, "higher_is_better": higher}
    if metrics["improved"]:
        state.best, state.bad_validations = value, 0
    else:
        state.bad_validations += 1
        state.stop = cfg.patience > 0 and state.bad_validations >= cfg.patience
    if run_log is not None:
        run_log.write(
            {
                **{k: v for k, v in metrics.items() if k != "improved"},
                "update": state.num_updates,
                "epoch": state.epoch,
                "time": round(time.time(), 1),
                **run.log_tags,
                "best": state.best,
            }
        )
    return metrics


# ----------------------------------------------------------------------------------------------- checkpoints


def rng_state() -> dict[str, Any]:
    """Every RNG a step can draw from, as tensors and plain containers (weights_only-loadable)."""
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = torch.from_numpy(np_state["state"]["key"].astype(np.int64))
    return {
        "python": random.getstate(),
        "numpy": np_state,
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


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
    return {
        "num_updates": state.num_updates,
        "epoch": state.epoch,
        "sampler": run.data.state_dict(),
        "best": state.best,
        "bad_validations": state.bad_validations,
        "log_sums": log_sums,
        "skipped_updates": state.skipped_updates,
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler is not None else None,
        "rng": rng,
        "world_size": env.world_size,
        "stage": run.index,
        "trainable": run.trainable,
    }


def checkpoint_config(model: torch.nn.Module, cfg: ExperimentConfig) -> dict:
    """The config saved in a checkpoint, its model section written by the model itself: one that rebuilds it
    without outside files (XSTNet: the wav2vec2 config instead of `w2v_path`)."""
    config = config_to_dict(cfg)
    config["model"] = model.checkpoint_config()
    return config


def save(
    run_dir: Path,
    model: torch.nn.Module,
    cfg: ExperimentConfig,
    vocab_files: list[Path] | None,
    run: StageRun,
    state: TrainState,
    metrics: dict | None,
    env: DistEnv,
) -> None:
    """Write checkpoints/ckpt-<update>, point `last` (and `best` on a better best_metric) at it, prune old ones.

    A save that fails (disk full, permissions) leaves the previous checkpoints and links as they were and
    stops the run (every rank) with an error naming the path."""
    resumable = trainer_state(state, run, env)
    failure = None
    if env.is_main:
        directory = run_dir / ckpt.CHECKPOINTS / f"ckpt-{state.num_updates}"
        try:
            if not directory.exists():  # the final save can coincide with a periodic one
                kept_metrics = {k: v for k, v in (metrics or {}).items() if k not in ("type", "improved")}
                ckpt.write_checkpoint(
                    directory,
                    model_state=model.state_dict(),
                    config=checkpoint_config(model, cfg),
                    vocab_files=list(vocab_files or []),
                    trainer_state=resumable,
                    metrics={"update": state.num_updates, **run.log_tags, **kept_metrics},
                )
            ckpt.point_link(run_dir, "last", directory)
            if metrics is not None and metrics.get("improved"):
                ckpt.point_link(run_dir, "best", directory)
            ckpt.prune_checkpoints(run_dir, keep_last=run.train.keep_last, keep_best=run.train.keep_best)
        except (OSError, CheckpointError) as err:
            failure = str(err) if isinstance(err, CheckpointError) else f"{directory}: cannot save ({err})"
    failure = broadcast_from_main(failure, env)
    if failure is not None:
        raise CheckpointError(
            f"{failure}; training stopped, the previous checkpoint and the last/best links are unchanged"
        )
    barrier(env)


def load_resume_state(directory: Path, env: DistEnv) -> dict:
    """trainer.pt of the checkpoint to resume from, checked against this run's process count."""
    saved = ckpt.load_trainer_state(directory)
    if saved["world_size"] != env.world_size:
        # The sampler position and the per-rank RNG states are per process.
        raise CheckpointError(
            f"{directory}: saved by {saved['world_size']} processes, resumed with "
            f"{env.world_size}; exact resume needs the same number"
        )
    return saved


def restore_progress(saved: dict, state: TrainState, env: DistEnv) -> None:
    """The counters of trainer.pt into `state` (the optimizer, scaler and data position go to enter_stage)."""
    state.num_updates, state.epoch = saved["num_updates"], saved["epoch"]
    state.best, state.bad_validations = saved["best"], saved["bad_validations"]
    state.skipped_updates = saved.get("skipped_updates", 0)
    state.log_sums = dict(saved["log_sums"]) if env.is_main else {}

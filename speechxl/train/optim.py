"""Adam with decoupled weight decay (what fairseq's `adam` is) and fairseq's `inverse_sqrt` schedule."""

from __future__ import annotations

import math

import torch

from speechxl.config import TrainConfig


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    trainable = [p for p in params if p.requires_grad]
    return torch.optim.AdamW(
        trainable,
        lr=cfg.warmup_init_lr if cfg.warmup_updates > 0 else cfg.lr,
        betas=tuple(cfg.adam_betas),
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
        # one kernel for the whole update on CUDA; CPU keeps the default (for-each) implementation
        fused=bool(trainable) and all(p.is_cuda for p in trainable),
    )


class InverseSqrtSchedule:
    """Linear warmup from `warmup_init_lr` to `lr` over `warmup_updates`, then `lr * sqrt(warmup / update)`.

    Stateless: the rate is a function of the update count alone, so resuming only needs that count.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, lr: float, warmup_updates: int, warmup_init_lr: float = 0.0
    ):
        self.optimizer = optimizer
        self.lr = lr
        self.warmup_updates = warmup_updates
        self.warmup_init_lr = warmup_init_lr if warmup_updates > 0 else lr

    def lr_at(self, num_updates: int) -> float:
        if num_updates < self.warmup_updates:
            return self.warmup_init_lr + num_updates * (self.lr - self.warmup_init_lr) / self.warmup_updates
        return self.lr * math.sqrt(max(self.warmup_updates, 1) / max(num_updates, 1))

    def step_update(self, num_updates: int) -> float:
        """Set the rate used by the next update, after `num_updates` updates are done."""
        lr = self.lr_at(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

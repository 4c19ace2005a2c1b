"""Chimera's shared semantic memory (Han, Wang, Ji, Li — Findings ACL 2021): M learned query vectors that read
the encoder states H through a few attention layers and become a fixed-size representation of the input.

Each layer is a Transformer encoder layer in which only the M query slots are updated and every position may
attend to H only (pre-norm):

    Q = Q + MHA(LN(Q), LN(H), LN(H))      the slots read H, never each other
    Q = Q + FFN(LN'(Q))

H is the same in every layer (each layer has its own LN and K/V projections of it); the slots of one layer
are the queries of the next. The released code (`w2v2_transformer_interlingua.py`) runs a fairseq
`TransformerEncoderLayer` over cat(H, Q) with an attention mask that hides the query columns and keeps only
the last M outputs: that is the same computation (one LayerNorm serves H and Q there, as `attn_norm` here).

Difference from the release: the release gives those layers an all-False padding mask, so the slots also
attend to the padding positions of H (whatever the encoder left there: they take softmax mass, and how many
there are depends on the batch's longest utterance). Here padding is masked by default (`mask_padding=True`):
an utterance gets the same memory alone or in a padded batch. `mask_padding=False` reproduces the release
(for faithful runs or imported weights). Like the release, there is no final LayerNorm after the last layer.
"""

from __future__ import annotations

import torch
from torch import nn

from speechxl.modules.transformer import (
    FeedForward,
    MultiheadAttention,
    _Sublayers,
    key_padding_to_attn_mask,
)


class MemoryLayer(_Sublayers):
    """One memory layer: the slots attend to H (cross-attention only) then a feed-forward block."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_dim: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = True,
    ):
        super().__init__(dropout, normalize_before)
        self.attn = MultiheadAttention(dim, heads, attention_dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation, activation_dropout)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, slots: torch.Tensor, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """slots (B, M, D), states H (B, S, D), mask (B, 1, 1, S) True = attend, or None -> slots (B, M, D)."""
        # pre-norm: the layer's LayerNorm applies to H too (in the release H and Q are one sequence);
        # post-norm: H enters unnormalised, as the release's post-norm layer would see it
        keys, values = self.attn.keys_values(self.attn_norm(states) if self.normalize_before else states)
        slots = self.residual(slots, self.attn_norm, lambda q: self.attn(q, keys, values, mask=mask))
        return self.residual(slots, self.ffn_norm, self.ffn)


class SemanticMemory(nn.Module):
    """H (B, S, D) with its padding mask -> the memory (B, M, D): `num_slots` learned queries, `num_layers`
    layers. See the module docstring for the computation and `mask_padding`."""

    def __init__(
        self,
        num_slots: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        num_layers: int = 3,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = True,
        mask_padding: bool = True,
    ):
        super().__init__()
        if num_slots < 1 or num_layers < 1:
            raise ValueError(f"the memory needs at least one slot and one layer, got {num_slots} and {num_layers}")
        # fairseq's Embedding init (the release's queries are an Embedding(M, D) read through its weight)
        self.queries = nn.Parameter(torch.randn(num_slots, dim) * dim**-0.5)
        self.layers = nn.ModuleList(
            MemoryLayer(
                dim,
                heads,
                ffn_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation_dropout=activation_dropout,
                activation=activation,
                normalize_before=normalize_before,
            )
            for _ in range(num_layers)
        )
        self.mask_padding = mask_padding

    @property
    def num_slots(self) -> int:
        return self.queries.size(0)

    def forward(self, states: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """states (B, S, D), padding_mask (B, S) True at padding -> memory slots (B, M, D)."""
        mask = key_padding_to_attn_mask(padding_mask) if self.mask_padding else None
        slots = self.queries.to(states.dtype).unsqueeze(0).expand(states.size(0), -1, -1)
        for layer in self.layers:
            slots = layer(slots, states, mask)
        return slots

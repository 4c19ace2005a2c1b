"""Transformer encoder / decoder on `F.scaled_dot_product_attention`, pre- or post-norm, with a KV cache.

Parameter names say what they are (`self_attn.q_proj`, `self_attn_norm`, `cross_attn.*`, `cross_attn_norm`,
`ffn.fc1`, `ffn_norm`, `final_norm`) so parameter-efficient fine-tuning can select them by name.

Grouped rows: the decoder accepts N = B·k token rows against B memory rows, rows b·k … b·k+k−1 belonging
to memory row b (k beams per utterance). Cross-attention keys/values are then computed and cached once
per utterance instead of once per beam, and never copied when beams are reordered.

CPU training path (same function, cheaper): dropout masks from 16-bit uniforms (`dropout_multiplier`), attention
with dropout computed eagerly instead of by SDPA's math fallback, q/k/v as one matmul, and the encoder's
position-wise work on real rows only (`RowPacking`). tests/test_transformer_training_path.py checks it equals
the eval path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from speechxl.modules.positions import SinusoidalPositions

Cache = dict[str, torch.Tensor]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def key_padding_to_attn_mask(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, S) True-at-padding -> SDPA boolean mask (B, 1, 1, S), True = attend; None when nothing is padded."""
    if padding_mask is None or not bool(padding_mask.any()):
        return None
    return ~padding_mask[:, None, None, :]


def mask_chunk_causal(length: int, chunk_frames: int, device: torch.device) -> torch.Tensor:
    """SDPA boolean mask (1, 1, T, T), True = attend: frame i sees frame j iff j's chunk is not after i's."""
    chunk = torch.arange(length, device=device) // chunk_frames
    return (chunk[None, :] <= chunk[:, None])[None, None]


_KEEP_LEVELS = 1 << 16  # the CPU dropout mask compares 16-bit uniforms: p is realised to within 2^-17


def dropout_multiplier(like: torch.Tensor, p: float) -> torch.Tensor:
    """Inverted-dropout multiplier shaped like `like`: 0 with probability p, else 1/(1−p), on `like`'s device.

    On CPU, drawing the random numbers is what dropout costs (the generator is serial: torch's bernoulli_
    spends ~4 ns per element, several times a multiply). One 64-bit draw is cut into four 16-bit uniforms,
    so a quarter of the draws give the mask. The scale uses the realised keep rate, so E[output] = input.
    """
    return _keep_mask(like, p).view(torch.uint8).to(like.dtype).mul_(_dropout_scale(p))


def _keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """Boolean mask shaped like `like`, True with probability 1 − p (to 2^-17): `dropout_multiplier`'s draw."""
    n, drop = like.numel(), round(p * _KEEP_LEVELS)
    if drop >= _KEEP_LEVELS:
        return torch.zeros(like.shape, dtype=torch.bool, device=like.device)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device).random_(-(1 << 63), None)
    uniform16 = words.view(torch.int16)[:n].view(like.shape)  # uniform over [-2^15, 2^15)
    return uniform16 >= drop - _KEEP_LEVELS // 2


def _dropout_scale(p: float) -> float:
    """1 / the realised keep rate, so that E[output] = input; 0 when everything is dropped."""
    drop = round(p * _KEEP_LEVELS)
    return 0.0 if drop >= _KEEP_LEVELS else _KEEP_LEVELS / (_KEEP_LEVELS - drop)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # accelerators have a fused dropout kernel with its own fast generator
        return F.dropout(x, p, True)
    return x * dropout_multiplier(x, p)


class Dropout(nn.Dropout):
    """nn.Dropout (same `p`, same expectation) with the cheaper CPU mask of `dropout_multiplier`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual + dropout(x); on CPU one fused multiply-add instead of a multiply and an add."""
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return residual + self(x)
        return torch.addcmul(residual, x, dropout_multiplier(x, self.p))


def _eager_attention(
    q: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None,
    is_causal: bool,
    dropout_p: float,
) -> torch.Tensor:
    """softmax(q·kᵀ masked)·v with dropout on the probabilities; q (B, H, t, hd) is already scaled.

    For dropout on CPU, SDPA runs its unfused math kernel; these are the same steps without its extra passes
    over the scores (q and k scaled separately, the bool mask turned into a float one and added, a check for
    fully masked rows) and with the cheaper dropout mask.
    """
    scores = torch.matmul(q, keys.transpose(-1, -2))
    if is_causal:
        t, s = scores.shape[-2:]
        mask = torch.ones(t, s, dtype=torch.bool, device=q.device).tril_(s - t)
    if mask is not None:
        # adding a -inf bias has a free backward (masked_fill's is another pass over the scores); in place
        # because matmul's backward does not need its output
        scores.add_(torch.zeros(mask.shape, dtype=scores.dtype, device=q.device).masked_fill_(~mask, float("-inf")))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(dropout(probs, dropout_p, True), values)


class RowPacking:
    """The real (non-padding) rows of a padded (B, T, ·) batch. Position-wise work (projections, feed-forward,
    norms, dropout) runs on these rows only; attention gets them back in the padded layout. Padding rows come
    back as zeros: nothing reads them, since attention masks them out."""

    def __init__(self, padding_mask: torch.Tensor):
        self.batch, self.length = padding_mask.shape
        self.index = (~padding_mask).flatten().nonzero().squeeze(1)
        lengths = (~padding_mask).sum(1)
        # right padding (every row's real positions come first): attention can then run per sequence on its
        # own rows, with no padded scores to compute (`MultiheadAttention.self_attention` without a mask)
        self.lengths: list[int] | None = (
            lengths.tolist()
            if bool(torch.equal(padding_mask, torch.arange(self.length, device=lengths.device) >= lengths[:, None]))
            else None
        )

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (N, C) real rows."""
        return x.flatten(0, 1).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) real rows -> (B, T, C), zeros at padding."""
        padded = x.new_zeros(self.batch * self.length, x.size(-1)).index_copy(0, self.index, x)
        return padded.view(self.batch, self.length, x.size(-1))


class MultiheadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _eager(self) -> bool:
        """Attention dropout on CPU: SDPA would take its slow math path, `_eager_attention` is cheaper."""
        return self.training and self.dropout > 0 and self.q_proj.weight.device.type == "cpu"

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)

    def _projection(self, x: torch.Tensor, projections: tuple[nn.Linear, ...]) -> torch.Tensor:
        """x through one or more of q/k/v_proj -> (..., len(projections)·D).

        Several projections run as one matmul on their stacked weights (fewer, larger GEMMs, and one
        input-gradient GEMM in backward). For `_eager_attention` the query weights are pre-scaled by
        1/√head_dim: scaling D×D weights is cheaper than scaling the (B, H, T, hd) queries.
        """
        weights, biases = [p.weight for p in projections], [p.bias for p in projections]
        if projections[0] is self.q_proj and self._eager():
            weights[0], biases[0] = weights[0] * self.head_dim**-0.5, biases[0] * self.head_dim**-0.5
        if len(projections) == 1:
            return F.linear(x, weights[0], biases[0])
        return F.linear(x, torch.cat(weights), torch.cat(biases))

    def _heads(self, x: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """(B, T, parts·D) stacked projections -> `parts` tensors (B, H, T, hd), views of x."""
        return [self._split_heads(part) for part in x.chunk(parts, dim=-1)]

    def keys_values(self, x: torch.Tensor, packing: RowPacking | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, D) -> keys, values (B, H, S, head_dim); with `packing`, projected on x's real rows only
        (keys and values at padding are then zeros: attention masks them)."""
        if self.training:  # stacking the weights pays off on training batches, not on one decoding step
            kv = self._projection(x if packing is None else packing.pack(x), (self.k_proj, self.v_proj))
            keys, values = self._heads(kv if packing is None else packing.pad(kv), 2)
            return keys, values
        return self._split_heads(self.k_proj(x)), self._split_heads(self.v_proj(x))

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        packing: RowPacking | None = None,
    ) -> torch.Tensor:
        """x (N, t, D), or its real rows with `packing`, attends to keys/values (B, H, S, hd) with N = B·k
        (rows grouped per key row) -> output shaped like x."""
        q = self._projection(x, (self.q_proj,))
        out = self._attend(self._split_heads(q if packing is None else packing.pad(q)), keys, values, mask, is_causal)
        return self.out_proj(out if packing is None else packing.pack(out))

    def self_attention(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        packing: RowPacking | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, D), or its real rows (N, D) with `packing`, attends to itself -> output shaped like x,
        keys and values (B, H, T, hd).

        With `packing` and no `mask`, each (right-padded) sequence attends over its own real rows, one call per
        sequence: padding costs no attention scores at all, and the keys/values returned are None.
        """
        qkv = self._projection(x, (self.q_proj, self.k_proj, self.v_proj))
        if packing is not None and mask is None:
            if packing.lengths is None:
                raise ValueError("per-sequence attention needs right padding; pass the padding as a mask")
            outs = [
                self._attend(*self._heads(part.unsqueeze(0), 3), None, is_causal)[0]
                for part in qkv.split(packing.lengths)
                if part.size(0)
            ]
            return self.out_proj(torch.cat(outs)), None, None
        if packing is not None:
            qkv = packing.pad(qkv)
        q, keys, values = self._heads(qkv, 3)
        out = self._attend(q, keys, values, mask, is_causal)
        return self.out_proj(out if packing is None else packing.pack(out)), keys, values

    def weights(self, x: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attention probabilities of x (N, t, D) over keys (B, H, S, hd), averaged over heads -> (N, t, S).

        Computed apart from `forward` (SDPA never materialises them): only callers that need them pay."""
        q = self._split_heads(self.q_proj(x)) * self.head_dim**-0.5
        n = q.size(0)
        if n != keys.size(0):  # grouped rows (beams): each row attends to its utterance's keys
            keys = keys.repeat_interleave(n // keys.size(0), dim=0)
            mask = mask.repeat_interleave(n // mask.size(0), dim=0) if mask is not None else None
        scores = torch.matmul(q, keys.transpose(-1, -2))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores.float(), dim=-1).mean(dim=1)

    def _attend(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """Heads (N, H, t, hd) attend -> (N, t, D), before `out_proj`."""
        n, _, t, _ = q.shape
        groups = n // keys.size(0)
        if groups > 1:  # fold the k rows of a group into the query length: one K/V per group
            q = q.view(keys.size(0), groups, self.heads, t, self.head_dim).transpose(1, 2)
            q = q.reshape(keys.size(0), self.heads, groups * t, self.head_dim)
        if self._eager():
            out = _eager_attention(q, keys, values, mask, is_causal, self.dropout)
        else:
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
            )
        if groups > 1:
            out = out.view(keys.size(0), self.heads, groups, t, self.head_dim).transpose(1, 2)
        out = out.reshape(n, self.heads, t, self.head_dim).transpose(1, 2)
        return out.reshape(n, t, self.heads * self.head_dim)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, activation: str = "relu", activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.activation = ACTIVATIONS[activation]
        self.activation_dropout = Dropout(activation_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        p = self.activation_dropout.p
        if self.activation is F.relu and self.training and p > 0 and h.device.type == "cpu":
            # ReLU folded into the dropout mask: h · (keep & h > 0) / (1 − p) is relu then dropout, and its
            # backward is one multiply (relu's threshold pass over the (rows, ffn_dim) gradient is saved)
            keep = _keep_mask(h, p).logical_and_(h > 0)
            return self.fc2(h * keep.view(torch.uint8).to(h.dtype).mul_(_dropout_scale(p)))
        return self.fc2(self.activation_dropout(self.activation(h)))


class _Sublayers(nn.Module):
    """Residual wiring shared by encoder and decoder layers: pre-norm `x + f(norm(x))` or post-norm
    `norm(x + f(x))`, dropout on the sub-layer output."""

    def __init__(self, dropout: float, normalize_before: bool):
        super().__init__()
        self.dropout = Dropout(dropout)
        self.normalize_before = normalize_before

    def residual(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable[[torch.Tensor], torch.Tensor]):
        if self.normalize_before:
            return self.dropout.add_to(x, sublayer(norm(x)))
        return norm(self.dropout.add_to(x, sublayer(x)))


class EncoderLayer(_Sublayers):
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
        self.self_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation, activation_dropout)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, packing: RowPacking | None = None) -> torch.Tensor:
        """x (B, T, D), or its real rows (N, D) with `packing`."""
        x = self.residual(
            x, self.self_attn_norm, lambda h: self.self_attn.self_attention(h, mask=mask, packing=packing)[0]
        )
        return self.residual(x, self.ffn_norm, self.ffn)

    def forward_with_past(
        self,
        x: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """New frames x (B, t, D) attend to the cached keys/values `past` of earlier frames and to themselves
        (`mask` (1, 1, t, past + t), True = attend). Returns the output and keys/values of past + new frames."""
        kv: list[torch.Tensor] = []

        def attend(h: torch.Tensor) -> torch.Tensor:
            keys, values = self.self_attn.keys_values(h)
            if past is not None:
                keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
            kv.extend((keys, values))
            return self.self_attn(h, keys, values, mask=mask)

        x = self.residual(x, self.self_attn_norm, attend)
        return self.residual(x, self.ffn_norm, self.ffn), kv[0], kv[1]


class DecoderLayer(_Sublayers):
    # Set `keep_cross_attention` on a layer to have each call store its cross-attention probabilities,
    # averaged over heads, in `cross_attention` (N, t, S): streaming policies (AlignAtt) read them. Off by
    # default, so training and ordinary decoding compute nothing extra.
    keep_cross_attention: bool = False
    cross_attention: torch.Tensor | None = None

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
        self.self_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = MultiheadAttention(dim, heads, attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, activation, activation_dropout)
        self.ffn_norm = nn.LayerNorm(dim)

    def _self_attention(
        self,
        h: torch.Tensor,
        past: tuple[torch.Tensor, torch.Tensor] | None,
        new_kv: list[torch.Tensor],
        packing: RowPacking | None = None,
    ) -> torch.Tensor:
        t = h.size(1) if packing is None else packing.length
        if past is None:  # teacher forcing or a first decoding call: causal over the new tokens
            out, keys, values = self.self_attn.self_attention(h, is_causal=t > 1, packing=packing)
            new_kv.extend((keys, values))
            return out
        keys, values = self.self_attn.keys_values(h)
        keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)
        new_kv.extend((keys, values))
        if t == 1:  # one new token sees every cached position
            return self.self_attn(h, keys, values)
        # several new tokens after a cache: causal mask aligned to the end
        total = keys.size(2)
        mask = torch.arange(total, device=h.device)[None, :] <= torch.arange(total - t, total, device=h.device)[:, None]
        return self.self_attn(h, keys, values, mask=mask)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
        packing: RowPacking | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the output and [keys, values] of self-attention including `past` (for the cache).
        With `packing` (teacher forcing, right-padded tokens), x is the real token rows (M, D)."""
        new_kv: list[torch.Tensor] = []
        x = self.residual(x, self.self_attn_norm, lambda h: self._self_attention(h, past, new_kv, packing))
        x = self.residual(x, self.cross_attn_norm, lambda h: self._cross_attention(h, cross_kv, memory_mask, packing))
        return self.residual(x, self.ffn_norm, self.ffn), new_kv

    def _cross_attention(
        self,
        h: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None,
        packing: RowPacking | None = None,
    ) -> torch.Tensor:
        if self.keep_cross_attention:
            padded = h if packing is None else packing.pad(h)
            self.cross_attention = self.cross_attn.weights(padded, cross_kv[0], memory_mask)
        return self.cross_attn(h, *cross_kv, mask=memory_mask, packing=packing)


def _layer_kwargs(
    dropout: float, attention_dropout: float, activation_dropout: float, activation: str, normalize_before: bool
) -> dict:
    return dict(
        dropout=dropout,
        attention_dropout=attention_dropout,
        activation_dropout=activation_dropout,
        activation=activation,
        normalize_before=normalize_before,
    )


class EncoderStateCache:
    """What a chunk-causal `TransformerEncoder` keeps of the complete chunks of one stream (streaming.py): their
    inputs, every layer's self-attention keys/values, and their outputs. On the next call with a longer input,
    chunks whose inputs are unchanged (to float rounding: per frame, max |difference| <= atol + rtol · max |value|)
    are reused; from the first chunk holding a changed frame on, everything is recomputed. So reuse does not
    change the result beyond rounding, it only skips work."""

    def __init__(self, rtol: float = 1e-5, atol: float = 1e-6):
        self.rtol, self.atol = rtol, atol
        self.inputs: torch.Tensor | None = None  # (T, D) inputs of the complete chunks
        self.keys: list[torch.Tensor] = []  # per layer (1, H, T, hd)
        self.values: list[torch.Tensor] = []
        self.outputs: torch.Tensor | None = None  # (1, T, D)
        self.reused = self.computed = 0  # frames of the last call taken from the cache / computed

    def reusable(self, x: torch.Tensor, chunk_frames: int) -> int:
        """Frames of x (T, D) at the start whose cached states are valid: whole chunks with unchanged inputs."""
        if self.inputs is None:
            return 0
        n = min(self.inputs.size(0), x.size(0))
        # per frame, relative to the frame's scale: the same front end run on a longer input may round differently
        old = self.inputs[:n]
        same = (x[:n] - old).abs().amax(dim=-1) <= self.atol + self.rtol * old.abs().amax(dim=-1)
        changed = (~same).nonzero()
        valid = int(changed[0]) if changed.numel() else n
        return valid // chunk_frames * chunk_frames


class TransformerEncoder(nn.Module):
    """Embedded input (B, T, D) -> dropout -> layers -> final_norm (pre-norm only)."""

    # Set `stream_cache` (an EncoderStateCache) on a chunk-causal encoder in eval mode to have each call (one
    # utterance, growing input) reuse the states of complete past chunks: only new and changed chunks are run.
    stream_cache: EncoderStateCache | None = None

    def __init__(
        self,
        num_layers: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = True,
        layerdrop: float = 0.0,
        chunk_frames: int = 0,
    ):
        super().__init__()
        kw = _layer_kwargs(dropout, attention_dropout, activation_dropout, activation, normalize_before)
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, ffn_dim, **kw) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim) if normalize_before else None
        self.layerdrop = layerdrop
        # > 0: chunk-causal (blockwise) self-attention, frame i sees frames of its own and earlier chunks of
        # `chunk_frames` frames; states of complete chunks never change when input is appended (streaming)
        self.chunk_frames = chunk_frames

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, D) -> (B, T, D); rows at padding come out as zeros."""
        if self.stream_cache is not None:
            return self.forward_cached(x, padding_mask, self.stream_cache)
        mask = key_padding_to_attn_mask(padding_mask)
        # padded batches run all but attention on the real rows: padding can be a third of a speech batch
        packing = RowPacking(padding_mask) if mask is not None else None
        if self.chunk_frames > 0:
            chunks = mask_chunk_causal(x.size(1), self.chunk_frames, x.device)
            mask = chunks if mask is None else mask & chunks
        elif packing is not None and packing.lengths is not None:
            mask = None  # right-padded: attention per utterance on its real frames (no padded scores)
        x = self.dropout(x if packing is None else packing.pack(x))
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            x = layer(x, mask, packing)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x if packing is None else packing.pad(x)

    def forward_cached(
        self, x: torch.Tensor, padding_mask: torch.Tensor | None, cache: EncoderStateCache
    ) -> torch.Tensor:
        """`forward` of one unpadded utterance (1, T, D) that reuses `cache` for the complete chunks whose
        inputs did not change since the last call, runs the rest, and stores the complete chunks for the next."""
        if self.chunk_frames <= 0 or self.training or x.size(0) != 1:
            raise ValueError("the encoder state cache needs a chunk-causal encoder in eval mode and one utterance")
        if padding_mask is not None and bool(padding_mask.any()):
            raise ValueError("the encoder state cache takes one unpadded utterance")
        n, total = self.chunk_frames, x.size(1)
        reuse = cache.reusable(x[0], n)
        cache.reused, cache.computed = reuse, total - reuse
        if reuse == total:
            return cache.outputs[:, :total]
        # new frames see every earlier chunk and the frames of their own chunk
        query_chunk = torch.arange(reuse, total, device=x.device) // n
        mask = (torch.arange(total, device=x.device)[None, :] // n <= query_chunk[:, None])[None, None]
        h = self.dropout(x[:, reuse:])
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            past = (cache.keys[i][:, :, :reuse], cache.values[i][:, :, :reuse]) if reuse else None
            h, k, v = layer.forward_with_past(h, past, mask)
            keys.append(k)
            values.append(v)
        if self.final_norm is not None:
            h = self.final_norm(h)
        out = torch.cat([cache.outputs[:, :reuse], h], dim=1) if reuse else h
        complete = total // n * n
        cache.inputs = x[0, :complete]
        cache.keys = [k[:, :, :complete] for k in keys]
        cache.values = [v[:, :, :complete] for v in values]
        cache.outputs = out[:, :complete]
        return out


class TransformerDecoder(nn.Module):
    """Tokens -> embedding ×√D + sinusoidal positions -> layers -> final_norm (pre-norm) -> logits through the
    tied embedding matrix. `forward` is teacher-forced; `step` decodes incrementally with a KV cache."""

    def __init__(
        self,
        vocab_size: int,
        padding_idx: int,
        num_layers: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        *,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = True,
        layerdrop: float = 0.0,
    ):
        super().__init__()
        kw = _layer_kwargs(dropout, attention_dropout, activation_dropout, activation, normalize_before)
        self.padding_idx = padding_idx
        self.embed_tokens = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)
        nn.init.normal_(self.embed_tokens.weight, mean=0.0, std=dim**-0.5)
        with torch.no_grad():
            self.embed_tokens.weight[padding_idx].zero_()
        self.embed_scale = math.sqrt(dim)
        self.embed_positions = SinusoidalPositions(dim, padding_idx)
        self.dropout = Dropout(dropout)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, **kw) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(dim) if normalize_before else None
        self.layerdrop = layerdrop

    def _embed(self, tokens: torch.Tensor, offset: int) -> torch.Tensor:
        positions = self.embed_positions(tokens.eq(self.padding_idx), offset)
        return self.dropout(self.embed_scale * self.embed_tokens(tokens) + positions)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        if self.final_norm is not None:
            x = self.final_norm(x)
        return F.linear(x, self.embed_tokens.weight)

    def forward(
        self,
        prev_tokens: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher forcing: (N, U) right-padded tokens -> logits (N, U, V); with `rows` (N, U) boolean, a
        subset of the real tokens, only their logits (K, V) in row-major order (what a loss scores).

        With `rows`, position-wise work runs on the real token rows only (`RowPacking`, as in the encoder) and
        memory keys and values on the real memory rows: with right padding, causal attention never reads a
        padded token. (Without `rows`, padded positions get their logits too, as in fairseq and HF.)
        """
        padding = prev_tokens.eq(self.padding_idx)
        packing = RowPacking(padding) if rows is not None and bool(padding.any()) else None
        x = self._embed(prev_tokens, 0)
        x = x if packing is None else packing.pack(x)
        memory_mask = key_padding_to_attn_mask(memory_padding_mask)
        memory_packing = RowPacking(memory_padding_mask) if memory_mask is not None and rows is not None else None
        for layer in self.layers:
            if self.training and self.layerdrop > 0 and torch.rand(()) < self.layerdrop:
                continue
            x, _ = layer(x, layer.cross_attn.keys_values(memory, memory_packing), memory_mask, packing=packing)
        if rows is not None:
            if bool((rows & padding).any()):
                raise ValueError("rows selects padding tokens: logits exist only for real tokens")
            if packing is None:
                return self._output(x.flatten(0, 1)[rows.flatten()])
            return self._output(x[rows.flatten()[packing.index]])
        return self._output(x)

    def step(
        self,
        prev_tokens: torch.Tensor,
        memory: torch.Tensor,
        memory_padding_mask: torch.Tensor | None,
        cache: Cache | None,
    ) -> tuple[torch.Tensor, Cache]:
        """Incremental decoding: (N, t) tokens so far (no padding) -> logits of the next token (N, V), cache.

        Only the tokens not yet in the cache are run (all of them on the first call, e.g. a forced prefix).
        """
        cache = {} if cache is None else cache
        past_len = cache["self_k.0"].size(2) if "self_k.0" in cache else 0
        x = self._embed(prev_tokens[:, past_len:], past_len)
        memory_mask = key_padding_to_attn_mask(memory_padding_mask)
        new_cache: Cache = {}
        for i, layer in enumerate(self.layers):
            if f"cross_k.{i}" not in cache:  # memory keys/values depend only on the encoder output
                cache[f"cross_k.{i}"], cache[f"cross_v.{i}"] = layer.cross_attn.keys_values(memory)
            past = (cache[f"self_k.{i}"], cache[f"self_v.{i}"]) if past_len else None
            x, (keys, values) = layer(x, (cache[f"cross_k.{i}"], cache[f"cross_v.{i}"]), memory_mask, past)
            new_cache.update(
                {
                    f"self_k.{i}": keys,
                    f"self_v.{i}": values,
                    f"cross_k.{i}": cache[f"cross_k.{i}"],
                    f"cross_v.{i}": cache[f"cross_v.{i}"],
                }
            )
        return self._output(x[:, -1]), new_cache

    @staticmethod
    def reorder_cache(cache: Cache, new_order: torch.Tensor) -> Cache:
        """Select token rows `new_order` (N',) of the cache. Rows of one group must come from one memory row
        (true for beam search); the per-utterance cross-attention entries follow, copied only if they change."""
        rows, mem_rows = cache["self_k.0"].size(0), cache["cross_k.0"].size(0)
        groups = rows // mem_rows
        mem_order = torch.div(new_order.view(-1, groups)[:, 0], groups, rounding_mode="floor")
        keep_memory = mem_order.numel() == mem_rows and bool(
            torch.equal(mem_order, torch.arange(mem_rows, device=mem_order.device))
        )
        return {
            key: value.index_select(0, new_order)
            if key.startswith("self_")
            else (value if keep_memory else value.index_select(0, mem_order))
            for key, value in cache.items()
        }

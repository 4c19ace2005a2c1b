"""COSTT (Dong et al., AAAI 2021, "Consecutive Decoding for Speech-to-text Translation").

fbank -> front end (`frontend`: 5 right-context frames stacked, every 3rd kept; or a 2D/1D conv) -> ×√D +
positions -> acoustic encoder (`acoustic`, post-norm) with a CTC head (`ctc_head`) on the transcript ->
CTC-guided shrinking (speechxl.modules.shrink: one state per greedy CTC token) -> + positions -> semantic
encoder (`encoder`) -> one consecutive decoder (`decoder`, tied embeddings) whose target is
`<asr> transcript <ast> translation </s>`: the transcript first, then the translation.

CTC blank = `<s>` (id 0), which never occurs inside a target (fairseq's choice; S2T uses it too).

Tasks (speechxl.tasks; no task of its own: the `triplet` batch already carries audio, transcript and
translation, and the model builds the consecutive target itself in `forward`):
- `triplet` (step 3, the ST triples): `ctc_weight`·CTC + `ce_weight`·CE on the consecutive target.
- `asr` (step 2, ASR data): CTC only, trains the front end and acoustic encoder (the shrinking has no weights).
- `mt` / `ext_mt` (step 1, external MT): the transcript tokens, embedded with the decoder's embedding, go
  through the semantic encoder; the decoder writes `mt_target`: `consecutive` (default: `<asr> x <ast> y`,
  the same format as ST, so the decoder learns the switch at `<ast>` and an LM of the transcript part from
  the external source text) or `translation` (`<ast> y`).
- `st` has no transcript to build the consecutive target from: an error.
The forced prefix is `<asr>` (or `<ast>` for `mt_target: translation` on MT); its loss is ignored. The
target language is not tagged inside the consecutive sequence (one direction per model, as in the paper).
Decoding returns both outputs: {"transcript": text before `<ast>`, "translation": text after it}; the search
may not end before `<ast>` (`ConsecutiveConstraint`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from speechxl.errors import DataError
from speechxl.losses import ctc_loss, label_smoothed_nll_loss
from speechxl.models.base import (
    Seq2SeqConfig,
    SpeechModel,
    build_encoder_decoder,
    config_from_preset,
    config_to_dict,
    prefix_size,
)
from speechxl.modules.positions import SinusoidalPositions
from speechxl.modules.shrink import ctc_shrink
from speechxl.modules.subsampling import (
    Conv1dSubsampler,
    Conv2dSubsampler,
    StackSubsampler,
    lengths_to_padding_mask,
)
from speechxl.modules.transformer import TransformerEncoder
from speechxl.tasks import AUDIO, TEXT, get_task

# `base`: the paper (d 512, 6 acoustic + 6 semantic encoder layers, 6 decoder layers, post-norm).
# `tiny`: tests and SynthST on a CPU.
SIZES: dict[str, dict[str, Any]] = {
    "base": dict(
        dim=512,
        acoustic_layers=6,
        encoder_layers=6,
        decoder_layers=6,
        encoder_heads=8,
        decoder_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        dropout=0.1,
        normalize_before=False,
    ),
    "tiny": dict(
        dim=64,
        acoustic_layers=2,
        encoder_layers=1,
        decoder_layers=1,
        encoder_heads=4,
        decoder_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        dropout=0.1,
        normalize_before=True,
        conv_channels=64,
    ),
}
FRONT_ENDS = ("stack", "conv2d", "conv1d")
SHRINK = ("first", "average", "none")


@dataclass
class CosttConfig(Seq2SeqConfig):
    input_dim: int = 80
    # `stack`: COSTT's (context + 1 frames stacked, every `stack_stride`-th kept); `conv2d`: two 3×3 stride-2
    # Conv2d + ReLU with `conv_channels` channels (ESPnet's); `conv1d`: fairseq's Conv1dSubsampler (S2T's).
    front_end: str = "stack"
    stack_context: int = 5
    stack_stride: int = 3
    acoustic_layers: int = 6
    shrink: str = "first"  # first | average (the mean of each run) | none (the semantic encoder sees every frame)
    ctc_weight: float = 0.5
    ce_weight: float = 0.5
    mt_target: str = "consecutive"  # what the decoder writes during MT pre-training: consecutive | translation

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "CosttConfig":
        c = config_from_preset(cls, config, SIZES, "base", "costt")
        for name, value, allowed in (
            ("front_end", c.front_end, FRONT_ENDS),
            ("shrink", c.shrink, SHRINK),
            ("mt_target", c.mt_target, ("consecutive", "translation")),
        ):
            if value not in allowed:
                raise DataError("model config", f"costt {name} must be one of {allowed}, not {value!r}")
        return c

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, "costt")


def build_front_end(c: CosttConfig) -> nn.Module:
    if c.front_end == "stack":
        return StackSubsampler(c.input_dim, c.dim, c.stack_context, c.stack_stride)
    if c.front_end == "conv2d":
        return Conv2dSubsampler(c.input_dim, c.conv_channels, c.dim)
    return Conv1dSubsampler(c.input_dim, c.conv_channels, c.dim, c.conv_kernel_sizes, mask_padding=True)


class FbankCTCEncoder(nn.Module):
    """fbank -> front end -> ×√D + positions -> acoustic Transformer encoder, and its CTC head (COSTT, LUT)."""

    def __init__(self, c: CosttConfig, vocab_size: int, pad: int):
        super().__init__()
        self.frontend = build_front_end(c)
        self.embed_scale = math.sqrt(c.dim)
        self.embed_positions = SinusoidalPositions(c.dim, padding_idx=pad)
        self.acoustic = TransformerEncoder(
            c.acoustic_layers,
            c.dim,
            c.encoder_heads,
            c.encoder_ffn_dim,
            dropout=c.dropout,
            attention_dropout=c.attention_dropout,
            activation_dropout=c.activation_dropout,
            activation=c.activation,
            normalize_before=c.normalize_before,
            layerdrop=c.encoder_layerdrop,
        )
        self.ctc_head = nn.Linear(c.dim, vocab_size)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, T, input_dim) fbank -> states (B, S, D), their lengths (B,), padding mask, CTC logits (B, S, V)."""
        if audio.dim() != 3:
            raise ValueError(f"costt/lut read fbank (B, T, bins), got {tuple(audio.shape)}: set data.features=fbank")
        x, lengths = self.frontend(audio, lengths)
        padding_mask = lengths_to_padding_mask(lengths, x.size(1))
        x = self.embed_scale * x + self.embed_positions(padding_mask)
        states = self.acoustic(x, padding_mask)
        return {"states": states, "lengths": lengths, "padding_mask": padding_mask, "ctc_logits": self.ctc_head(states)}


def ctc_targets(batch: dict[str, Any], eos: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transcript without its language tag and </s> (neither is spoken), and its lengths."""
    skip = prefix_size(batch)
    tokens = batch["transcript"][:, skip:]
    return tokens.masked_fill(tokens.eq(eos), pad), batch["transcript_lengths"] - skip - 1


def consecutive_target(
    batch: dict[str, Any], asr: int, ast: int, eos: int, pad: int, with_transcript: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """`<asr> x <ast> y </s>` (or `<ast> y </s>`) per row, right-padded, and its prev_output (`</s>` + seq[:-1]).

    x and y are the batch's transcript and target without their language tags (and x without its </s>)."""
    skip = prefix_size(batch)
    rows = []
    target_lengths = batch["target_lengths"].tolist()
    transcript_lengths = batch["transcript_lengths"].tolist() if with_transcript else None
    for i, target_length in enumerate(target_lengths):
        y = batch["target"][i, skip:target_length]
        if with_transcript:
            x = batch["transcript"][i, skip : transcript_lengths[i] - 1]
            rows.append(torch.cat([y.new_tensor([asr]), x, y.new_tensor([ast]), y]))
        else:
            rows.append(torch.cat([y.new_tensor([ast]), y]))
    lengths = torch.tensor([len(r) for r in rows], device=batch["target"].device)
    target = batch["target"].new_full((len(rows), int(lengths.max())), pad)
    for i, row in enumerate(rows):
        target[i, : len(row)] = row
    prev = torch.full_like(target, pad)
    prev[:, 0] = eos
    prev[:, 1:] = target[:, :-1]
    prev[torch.arange(target.size(1), device=target.device)[None, :] >= lengths[:, None]] = pad
    return target, prev


def split_consecutive(tokens: list[int], ast: int, vocab) -> dict[str, str]:
    """A decoded consecutive sequence -> {"transcript": before the first <ast>, "translation": after it}.
    Without <ast> (the length limit hit) everything is transcript and the translation is empty."""
    if ast in tokens:
        cut = tokens.index(ast)
        return {"transcript": vocab.decode(tokens[:cut]), "translation": vocab.decode(tokens[cut + 1 :])}
    return {"transcript": vocab.decode(tokens), "translation": ""}


class ConsecutiveConstraint:
    """A search logit processor (the speechxl.inference.search.LogitProcessor protocol; models do not import
    inference/): no </s> before `<ast>`, at most one `<ast>`, and no `<asr>` after the forced prefix.

    The length limit (applied after this) may still end a hypothesis that never wrote `<ast>`."""

    def __init__(self, asr: int, ast: int, eos: int):
        self.asr, self.ast, self.eos = asr, ast, eos

    def __call__(self, lp: torch.Tensor, s) -> torch.Tensor:
        if s.step == 0:  # the forced prefix: ForcePrefix takes the real log-prob of the tag
            return lp
        has_ast = s.tokens.eq(self.ast).any(dim=1)
        lp[~has_ast, self.eos] = -math.inf
        lp[has_ast, self.ast] = -math.inf
        lp[:, self.asr] = -math.inf
        return lp

    def select(self, keep: torch.Tensor) -> None:
        """Stateless: it reads each row's own tokens."""


class COSTT(SpeechModel):
    def __init__(self, config: CosttConfig, vocab_size: int, pad: int, eos: int, blank: int, asr: int, ast: int):
        super().__init__()
        self.config, self.pad, self.eos, self.blank, self.asr, self.ast = config, pad, eos, blank, asr, ast
        c = config
        self.front = FbankCTCEncoder(c, vocab_size, pad)
        self.embed_scale = math.sqrt(c.dim)
        self.embed_positions = SinusoidalPositions(c.dim, padding_idx=pad)
        self.encoder, self.decoder = build_encoder_decoder(c, vocab_size, pad)

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "COSTT":
        for tag in ("asr", "ast"):
            if not vocab.has_tag(tag):
                raise DataError(
                    "model config", f"costt needs the <{tag}> tag in the vocabulary (speechxl prep adds it)"
                )
        return cls(
            CosttConfig.from_dict(config),
            len(vocab),
            vocab.pad,
            vocab.eos,
            blank=vocab.bos,
            asr=vocab.tag("asr"),
            ast=vocab.tag("ast"),
        )

    # ------------------------------------------------------------------------------------------- encoder

    def encoder_input(self, batch: dict[str, Any]) -> str:
        task = batch.get("task")
        return get_task(task).encoder_input if task else (AUDIO if batch.get("audio") is not None else TEXT)

    def encode_acoustic(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.front(batch["audio"], batch["audio_lengths"])

    def encode_semantic(self, acoustic: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Shrink the acoustic states by their greedy CTC labels, then the semantic encoder."""
        states, lengths, padding_mask = acoustic["states"], acoustic["lengths"], acoustic["padding_mask"]
        if self.config.shrink != "none":
            labels = acoustic["ctc_logits"].detach().argmax(-1)
            states, lengths, padding_mask = ctc_shrink(states, labels, lengths, self.blank, self.config.shrink)
        x = states + self.embed_positions(padding_mask)
        return {
            "memory": self.encoder(x, padding_mask),
            "memory_padding_mask": padding_mask,
            "acoustic_lengths": acoustic["lengths"],
            "memory_lengths": lengths,
        }

    def encode_text(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The transcript tokens (`<en> x </s>`) through the semantic encoder (MT; a LUT teacher)."""
        tokens = batch["transcript"]
        padding_mask = tokens.eq(self.pad)
        x = self.embed_scale * self.decoder.embed_tokens(tokens) + self.embed_positions(padding_mask)
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.encoder_input(batch) == TEXT:
            return self.encode_text(batch)
        return self.encode_semantic(self.encode_acoustic(batch))

    # ------------------------------------------------------------------------------------------- search

    def _writes_transcript(self, batch: dict[str, Any]) -> bool:
        return self.encoder_input(batch) == AUDIO or self.config.mt_target == "consecutive"

    def decode_prefix(self, batch: dict[str, Any]) -> torch.Tensor:
        n = len(batch["ids"])
        device = (batch.get("audio") if batch.get("audio") is not None else batch["transcript"]).device
        tag = self.asr if self._writes_transcript(batch) else self.ast
        return torch.full((n, 1), tag, dtype=torch.long, device=device)

    def logit_processors(self, batch: dict[str, Any]) -> list:
        return [ConsecutiveConstraint(asr=self.asr, ast=self.ast, eos=self.eos)]

    def output_texts(self, tokens: list[int], vocab, task) -> dict[str, str]:
        return split_consecutive(tokens, self.ast, vocab)

    # ------------------------------------------------------------------------------------------- training

    def _ctc(self, acoustic: dict[str, torch.Tensor], batch: dict[str, Any]) -> tuple[torch.Tensor, int]:
        tokens, lengths = ctc_targets(batch, self.eos, self.pad)
        loss = ctc_loss(acoustic["ctc_logits"], acoustic["lengths"], tokens, lengths, blank=self.blank)
        return loss, int(lengths.sum())

    def _ce(self, enc: dict[str, torch.Tensor], target: torch.Tensor, prev: torch.Tensor):
        logits = self.decoder(prev, enc["memory"], enc["memory_padding_mask"])
        return label_smoothed_nll_loss(
            logits, target, epsilon=self.label_smoothing, ignore_index=self.pad, ignore_prefix_size=1
        )

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        task = batch.get("task") or "triplet"
        c = self.config
        logs: dict[str, float] = {"nsentences": len(batch["ids"])}
        if task in ("mt", "ext_mt"):
            target, prev = consecutive_target(
                batch, self.asr, self.ast, self.eos, self.pad, with_transcript=c.mt_target == "consecutive"
            )
            loss, nll, ntokens = self._ce(self.encode_text(batch), target, prev)
            logs.update(mt_loss=loss.item(), nll_loss=nll.item(), ntokens=ntokens)
            return {"loss": loss, "sample_size": ntokens, "logs": logs}
        if batch.get("transcript") is None:
            raise DataError(
                "data.tasks",
                f"costt cannot train task {task!r}: its batches have no transcript "
                "(use triplet for ST, asr for the CTC step, mt/ext_mt for MT)",
            )
        acoustic = self.encode_acoustic(batch)
        ctc, ctc_tokens = self._ctc(acoustic, batch)
        logs.update(ctc_loss=ctc.item(), ctc_ntokens=ctc_tokens)
        if task == "asr":  # step 2: the acoustic encoder learns CTC alone
            logs["ntokens"] = ctc_tokens
            return {"loss": ctc, "sample_size": ctc_tokens, "logs": logs}
        enc = self.encode_semantic(acoustic)
        target, prev = consecutive_target(batch, self.asr, self.ast, self.eos, self.pad)
        ce, nll, ntokens = self._ce(enc, target, prev)
        logs.update(st_loss=ce.item(), nll_loss=nll.item(), ntokens=ntokens, st_ntokens=ntokens)
        # the CE sum and the CTC sum are weighted as they are, over the consecutive target's token count
        loss = c.ce_weight * ce + c.ctc_weight * ctc
        return {"loss": loss, "sample_size": ntokens, "logs": logs}

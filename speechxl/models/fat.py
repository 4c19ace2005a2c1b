"""FAT-MLM and FAT-ST (Zheng et al., ICML 2021, "Fused Acoustic and Text Encoding for Multimodal Bilingual
Pretraining and Speech Translation").

FAT-MLM (`fat_mlm`): one Transformer encoder over `[speech ; source text ; target text]`, whichever of the three
a batch carries. Speech: 80-dim fbank -> `Conv2dSubsampler` (two 3×3 stride-2 convs, 4× shorter) -> ×√D.
Text: the token embedding ×√D. Every segment gets its own sinusoidal positions (restarting at the segment's first
position) and a learned segment embedding (speech / source language / target language); the language tags the
data puts in front of each text (`<en>`, `<de>`) stay in the sequence. Heads: masked text -> the tied
vocabulary softmax, cross-entropy on the masked tokens; speech -> `Conv2dUpsampler` (two 3×3 stride-2
transposed convs, back to the fbank shape), L2 on the masked frames. Any subset of fields trains
(speechxl.tasks `mlm_speech`, `mlm_asr`, `mlm_triplet`, `mlm_bitext`, `mlm_text`, and `mt` batches of external
bitext): each batch contributes the losses its fields allow (ℓ_s, ℓ_{s,x}, ℓ_{s,x,y}, TLM, MLM).

FAT-ST (`fat_st`): the same front end and encoder, and a Transformer decoder whose token embedding is the
encoder's and its output projection (tied). With `mlm_checkpoint`, the front end, encoder and token embedding
come from a FAT-MLM checkpoint and decoder layer i is a copy of encoder layer i (self-attention, feed-forward,
their norms; the final norm from the encoder's); cross-attention starts random. Tasks: `triplet` trains
L_ST + L_MT through the shared encoder (speech -> target, source text -> target), `st` / `mt` / `asr` one loss
each; decoding goes through the common search (`encode`, `decode_step`, ...), so translate and stream work.

Choices where the paper's text was not available here (docs/methods.md, FAT):
- text masking: 15% of the maskable tokens of each sequence (at least one; never language tags, `</s>`,
  padding), of them 80% -> a learned [MASK] vector, 10% -> a random ordinary token, 10% kept;
- speech masking: 30% of each utterance's fbank frames in non-overlapping spans of 20 frames (200 ms, 5 encoder
  positions), zeroed in the input (0 = the utterance mean after CMVN); L2 = mean over the 80 bins of the squared
  error, summed over masked frames; a masked frame weighs 0.1 of a masked token (`speech_weight`), in the loss
  and in the sample size (at 1.0 masked tokens were 4% of the units the loss is averaged over: 113 vs 2,560);
- masks are drawn per utterance and segment from (mask_seed, update, utterance id, segment): a padded batch gets
  what each utterance gets alone, and a segment's masks do not depend on the others present; validation always
  uses the same masks (update 0), so the dev masked loss compares checkpoints;
- sizes: `base` d 512, 12 fused encoder layers, 6 decoder layers (copies of encoder layers 0-5), 8 heads, FFN
  2048, conv 256 channels, pre-norm; `tiny` for tests and SynthST on a CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechxl import checkpoint as ckpt
from speechxl.errors import CheckpointError, DataError
from speechxl.losses import label_smoothed_nll_loss, masked_frames_l2_loss, masked_tokens_ce_loss
from speechxl.models.base import (
    Seq2SeqConfig,
    SpeechModel,
    build_encoder_decoder,
    config_from_preset,
    config_to_dict,
    prefix_size,
)
from speechxl.modules.mlm import MASK, RANDOM, Conv2dUpsampler, span_mask, token_mask, utterance_generator
from speechxl.modules.positions import SinusoidalPositions
from speechxl.modules.subsampling import Conv2dSubsampler, lengths_to_padding_mask
from speechxl.modules.transformer import TransformerEncoder
from speechxl.tasks import AUDIO, TEXT, get_task

SIZES: dict[str, dict[str, Any]] = {
    "base": dict(
        dim=512,
        encoder_layers=12,
        decoder_layers=6,
        encoder_heads=8,
        decoder_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        dropout=0.1,
        conv_channels=256,
    ),
    "tiny": dict(
        dim=64,
        encoder_layers=2,
        decoder_layers=1,
        encoder_heads=4,
        decoder_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        dropout=0.1,
        conv_channels=32,
    ),
}
SPEECH, SOURCE, TARGET = 0, 1, 2  # segment ids: the segment (modality / language) embedding's rows
TEXT_SEGMENTS = (("transcript", SOURCE), ("target", TARGET))  # batch key of each text segment
# What FAT-ST takes from FAT-MLM must match in both configs.
ENCODER_KEYS = ("input_dim", "dim", "encoder_layers", "encoder_heads", "encoder_ffn_dim", "conv_channels")
ENCODER_KEYS += ("normalize_before", "activation")


@dataclass
class FatMLMConfig(Seq2SeqConfig):
    """FAT-MLM; the decoder fields of Seq2SeqConfig are unused (FAT-ST reads them)."""

    input_dim: int = 80
    text_mask_ratio: float = 0.15
    text_random_prob: float = 0.1  # of the chosen tokens: replaced by a random token
    text_keep_prob: float = 0.1  # kept as they are (the rest become [MASK])
    speech_mask_ratio: float = 0.3  # of each utterance's fbank frames
    speech_mask_span: int = 20  # fbank frames per masked span (10 ms each)
    # A masked frame's share against a masked token's, in the loss and the sample size: 0.1 makes 10 frames
    # (100 ms) weigh like one token; at 1.0 the ~20 masked frames per masked token outweigh the text losses.
    speech_weight: float = 0.1
    mask_seed: int = 1

    ARCH = "fat_mlm"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "FatMLMConfig":
        c = config_from_preset(cls, config, SIZES, "base", cls.ARCH)
        for name in ("text_mask_ratio", "text_random_prob", "text_keep_prob", "speech_mask_ratio"):
            if not 0.0 <= getattr(c, name) <= 1.0:
                raise DataError("model config", f"fat_mlm {name} must be within [0, 1], not {getattr(c, name)}")
        if c.text_random_prob + c.text_keep_prob > 1.0 or c.speech_mask_span < 1:
            raise DataError("model config", "fat_mlm: text_random_prob + text_keep_prob > 1 or speech_mask_span < 1")
        return c

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, self.ARCH)


@dataclass
class FatSTConfig(Seq2SeqConfig):
    input_dim: int = 80
    # A FAT-MLM checkpoint directory: front end, encoder and token embedding from it, decoder layers copied from
    # its encoder layers. Empty in the checkpoints FAT-ST writes (its weights are in them).
    mlm_checkpoint: str = ""

    ARCH = "fat_st"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> "FatSTConfig":
        return config_from_preset(cls, config, SIZES, "base", cls.ARCH)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self, self.ARCH)


def fused_encoder(c: Seq2SeqConfig) -> TransformerEncoder:
    return TransformerEncoder(
        c.encoder_layers,
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


def special_ids(vocab) -> torch.Tensor:
    """(V,) bool: ids never masked nor drawn as random tokens (<s> <pad> </s> <unk>, task and language tags)."""
    special = torch.zeros(len(vocab), dtype=torch.bool)
    for i in range(len(vocab)):
        piece = vocab.piece(i)
        special[i] = piece.startswith("<") and piece.endswith(">")
    special[[vocab.bos, vocab.pad, vocab.eos, vocab.unk]] = True
    return special


class FatFront(nn.Module):
    """The fused encoder's input embeddings, per segment: ×√D + positions restarting at 0 + segment embedding."""

    def __init__(self, c: Seq2SeqConfig, pad: int):
        super().__init__()
        self.subsampler = Conv2dSubsampler(c.input_dim, c.conv_channels, c.dim)
        self.segments = nn.Embedding(3, c.dim)
        nn.init.normal_(self.segments.weight, std=c.dim**-0.5)
        self.embed_scale = math.sqrt(c.dim)
        self.positions = SinusoidalPositions(c.dim, padding_idx=pad)

    def speech(self, fbank: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, bins) fbank -> embedded (B, S, D), its padding mask (B, S) and lengths (B,)."""
        if fbank.dim() != 3:
            raise ValueError(f"fat reads fbank (B, T, bins), got {tuple(fbank.shape)}: set data.features=fbank")
        x, lengths = self.subsampler(fbank, lengths)
        padding_mask = lengths_to_padding_mask(lengths, x.size(1))
        return self.segment(self.embed_scale * x, padding_mask, SPEECH), padding_mask, lengths

    def segment(self, x: torch.Tensor, padding_mask: torch.Tensor, segment: int) -> torch.Tensor:
        """Scaled embeddings (B, L, D) of one segment -> + its own positions + its segment embedding."""
        return x + self.positions(padding_mask) + self.segments.weight[segment]


class FatMLM(SpeechModel):
    def __init__(self, config: FatMLMConfig, vocab_size: int, pad: int, eos: int, special: torch.Tensor):
        super().__init__()
        self.config, self.pad, self.eos = config, pad, eos
        c = config
        self.front = FatFront(c, pad)
        self.embed_tokens = nn.Embedding(vocab_size, c.dim, padding_idx=pad)
        nn.init.normal_(self.embed_tokens.weight, std=c.dim**-0.5)
        with torch.no_grad():
            self.embed_tokens.weight[pad].zero_()
        self.mask_embedding = nn.Parameter(torch.randn(c.dim) * c.dim**-0.5)  # [MASK]
        self.encoder = fused_encoder(c)
        self.reconstruct = Conv2dUpsampler(c.dim, c.conv_channels, c.input_dim)
        self.register_buffer("special", special, persistent=False)
        self.register_buffer("ordinary", (~special).nonzero().squeeze(1), persistent=False)
        self.num_updates = 0

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "FatMLM":
        return cls(FatMLMConfig.from_dict(config), len(vocab), vocab.pad, vocab.eos, special_ids(vocab))

    def set_update(self, num_updates: int) -> None:
        self.num_updates = num_updates  # masks differ per update in training

    def mask_seed(self) -> int:
        """Training: a seed per update; evaluation: always the same masks (a comparable dev masked loss)."""
        return self.config.mask_seed * 1_000_003 + (self.num_updates + 1 if self.training else 0)

    # ------------------------------------------------------------------------------------------- masking

    def mask_speech(
        self, fbank: torch.Tensor, lengths: torch.Tensor, generators: list[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, bins) -> the input with masked frames zeroed, and the frame mask (B, T) (never on padding)."""
        c = self.config
        mask = torch.zeros(fbank.shape[:2], dtype=torch.bool)
        for i, (length, generator) in enumerate(zip(lengths.tolist(), generators)):
            mask[i, :length] = span_mask(length, c.speech_mask_ratio, c.speech_mask_span, generator)
        mask = mask.to(fbank.device)
        return fbank.masked_fill(mask[:, :, None], 0.0), mask

    def mask_text(self, tokens: torch.Tensor, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) tokens -> embedded masked input (B, L, D) ×√D, and the chosen positions (B, L)."""
        c = self.config
        maskable = ~self.special[tokens].cpu()
        chosen = torch.zeros_like(maskable)
        action = torch.full(tokens.shape, MASK, dtype=torch.long)
        replaced = tokens.cpu().clone()
        for i, generator in enumerate(generators):
            chosen[i], action[i] = token_mask(
                maskable[i], c.text_mask_ratio, c.text_random_prob, c.text_keep_prob, generator
            )
            random_here = chosen[i] & action[i].eq(RANDOM)
            draws = torch.randint(len(self.ordinary), (int(random_here.sum()),), generator=generator)
            replaced[i, random_here] = self.ordinary.cpu()[draws]
        chosen, action = chosen.to(tokens.device), action.to(tokens.device)
        x = self.embed_tokens(replaced.to(tokens.device))
        to_mask = (chosen & action.eq(MASK))[:, :, None]
        x = torch.where(to_mask, self.mask_embedding.to(x.dtype), x)
        return self.front.embed_scale * x, chosen

    # ------------------------------------------------------------------------------------------- forward

    def masked_pass(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Mask the batch's segments, encode them jointly, predict: per present segment its masked positions
        and predictions: `speech` {input, masked_input, frame_mask, reconstruction (B, T, bins)};
        `transcript` / `target` {tokens, chosen (B, L), logits (N_chosen, V)}."""
        seed = self.mask_seed()

        def generators(segment: str) -> list[torch.Generator]:
            """One per utterance and segment: a segment's masks do not depend on the other segments present."""
            return [utterance_generator(seed, f"{utterance}/{segment}") for utterance in batch["ids"]]

        pieces: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # (segment key, embedded, padding mask)
        out: dict[str, Any] = {}
        if batch.get("audio") is not None:
            fbank, lengths = batch["audio"], batch["audio_lengths"]
            masked, frame_mask = self.mask_speech(fbank, lengths, generators("speech"))
            x, padding_mask, states = self.front.speech(masked, lengths)
            pieces.append(("speech", x, padding_mask))
            out["speech"] = {"input": fbank, "masked_input": masked, "frame_mask": frame_mask, "states": states}
        for key, segment in TEXT_SEGMENTS:
            if batch.get(key) is not None:
                tokens = batch[key]
                x, chosen = self.mask_text(tokens, generators(key))
                padding_mask = tokens.eq(self.pad)
                pieces.append((key, self.front.segment(x, padding_mask, segment), padding_mask))
                out[key] = {"tokens": tokens, "chosen": chosen}
        if not pieces:
            raise ValueError(f"fat_mlm: batch of task {batch.get('task')!r} has no audio, transcript or target")
        hidden = self.encoder(torch.cat([p[1] for p in pieces], dim=1), torch.cat([p[2] for p in pieces], dim=1))
        for (key, _, _), h in zip(pieces, hidden.split([p[1].size(1) for p in pieces], dim=1)):
            if key == "speech":
                speech = out["speech"]
                frames = self.reconstruct(h, speech.pop("states"))
                speech["reconstruction"] = frames[:, : speech["input"].size(1)]
            else:  # the tied softmax, only where a token was chosen
                out[key]["logits"] = F.linear(h[out[key]["chosen"]], self.embed_tokens.weight)
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Summed losses: CE over the masked tokens of each text segment + speech_weight · L2 over the masked
        frames; sample_size = masked tokens + speech_weight · masked frames (a masked frame counts as that much
        of a token). Logs `text_loss` / `speech_loss` per masked token / frame, `<task>_loss` per unit."""
        task = batch.get("task") or "mlm"
        out = self.masked_pass(batch)
        logs: dict[str, float] = {"nsentences": len(batch["ids"])}
        total = None
        units = 0
        texts = [out[key] for key, _ in TEXT_SEGMENTS if key in out]
        if texts:
            ce, n = masked_tokens_ce_loss(
                torch.cat([t["logits"] for t in texts]), torch.cat([t["tokens"][t["chosen"]] for t in texts])
            )
            logs["text_loss"], logs["text_ntokens"] = ce.item(), n
            total, units = ce, units + n
        if "speech" in out:
            s = out["speech"]
            l2, n = masked_frames_l2_loss(s["reconstruction"], s["input"], s["frame_mask"])
            logs["speech_loss"], logs["speech_ntokens"] = l2.item(), n
            weight = self.config.speech_weight
            total, units = (weight * l2 if total is None else total + weight * l2), units + weight * n
        logs[f"{task}_loss"], logs[f"{task}_ntokens"], logs["ntokens"] = total.item(), units, units
        return {"loss": total, "sample_size": units, "logs": logs}


class FatST(SpeechModel):
    def __init__(self, config: FatSTConfig, vocab_size: int, pad: int, eos: int):
        super().__init__()
        self.config, self.pad, self.eos = config, pad, eos
        self.front = FatFront(config, pad)
        self.encoder, self.decoder = build_encoder_decoder(config, vocab_size, pad)

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab) -> "FatST":
        c = FatSTConfig.from_dict(config)
        model = cls(c, len(vocab), vocab.pad, vocab.eos)
        if c.mlm_checkpoint:
            model.init_from_mlm(Path(c.mlm_checkpoint), vocab)
        return model

    def checkpoint_config(self) -> dict[str, Any]:
        """The model config without `mlm_checkpoint`: a FAT-ST checkpoint holds all its weights."""
        return {**super().checkpoint_config(), "mlm_checkpoint": ""}

    @property
    def embed_tokens(self) -> nn.Embedding:
        """The one token embedding: the encoder's text input and the decoder's (tied) input and output."""
        return self.decoder.embed_tokens

    def init_from_mlm(self, directory: Path, vocab) -> None:
        """Front end, encoder and token embedding from a FAT-MLM checkpoint; decoder layer i (self-attention,
        feed-forward, their norms) and the decoder's final norm copied from encoder layer i and its final norm.
        Cross-attention keeps its random initialisation."""
        config = ckpt.upgrade_config(ckpt.load_config_dict(directory))["model"]
        if config.get("arch") != FatMLMConfig.ARCH:
            raise CheckpointError(f"{directory}: mlm_checkpoint is a {config.get('arch')!r} model, not fat_mlm")
        mlm = FatMLMConfig.from_dict({k: v for k, v in config.items() if k != "arch"})
        different = [k for k in ENCODER_KEYS if getattr(mlm, k) != getattr(self.config, k)]
        if different:
            theirs = {k: getattr(mlm, k) for k in different}
            raise CheckpointError(f"{directory}: FAT-MLM {theirs} differ from this FAT-ST's; set them alike")
        if self.config.decoder_layers > mlm.encoder_layers:
            raise CheckpointError(f"{directory}: {self.config.decoder_layers} decoder layers > {mlm.encoder_layers}")
        theirs_vocab = ckpt.load_vocab(directory)
        if [theirs_vocab.piece(i) for i in range(len(theirs_vocab))] != [vocab.piece(i) for i in range(len(vocab))]:
            raise CheckpointError(f"{directory}: its vocabulary differs from this run's")
        weights = ckpt.require_file(directory, ckpt.MODEL_FILE)
        mapped = mlm_to_st_weights(ckpt.load_weights(weights), self.config.decoder_layers)
        state = self.state_dict()
        wrong = sorted(k for k in mapped if k not in state or state[k].shape != mapped[k].shape)
        if wrong:
            raise CheckpointError(f"{weights}: FAT-MLM weights that do not fit FAT-ST: {', '.join(wrong[:8])}")
        state.update(mapped)
        self.load_state_dict(state)

    # ------------------------------------------------------------------------------------------- encoder

    def encoder_input(self, batch: dict[str, Any]) -> str:
        task = batch.get("task")
        return get_task(task).encoder_input if task else (AUDIO if batch.get("audio") is not None else TEXT)

    def encode_audio(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, padding_mask, _ = self.front.speech(batch["audio"], batch["audio_lengths"])
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def encode_text(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        tokens = batch["transcript"]
        padding_mask = tokens.eq(self.pad)
        x = self.front.segment(self.front.embed_scale * self.embed_tokens(tokens), padding_mask, SOURCE)
        return {"memory": self.encoder(x, padding_mask), "memory_padding_mask": padding_mask}

    def encode(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.encode_audio(batch) if self.encoder_input(batch) == AUDIO else self.encode_text(batch)

    # ------------------------------------------------------------------------------------------- training

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """L_ST + L_MT on a triplet batch (speech and source text through the same encoder, one audio and one
        text encoding), one loss on any other task; summed over target tokens (language tag excluded)."""
        task = batch.get("task") or "st"
        spec = get_task(task)
        if task == "triplet":
            losses = (("st", AUDIO, "target"), ("mt", TEXT, "target"))
        else:
            losses = ((task, spec.encoder_input, spec.decoder_target),)
        skip = prefix_size(batch)
        total = None
        logs: dict[str, float] = {"nll_loss": 0.0, "ntokens": 0, "nsentences": len(batch["ids"])}
        for name, source, key in losses:
            enc = self.encode_audio(batch) if source == AUDIO else self.encode_text(batch)
            logits = self.decoder(batch[f"prev_{key}"], enc["memory"], enc["memory_padding_mask"])
            loss, nll, ntokens = label_smoothed_nll_loss(
                logits, batch[key], epsilon=self.label_smoothing, ignore_index=self.pad, ignore_prefix_size=skip
            )
            total = loss if total is None else total + loss
            logs[f"{name}_loss"], logs[f"{name}_ntokens"] = loss.item(), ntokens
            logs["nll_loss"] += nll.item()
            logs["ntokens"] += ntokens
        return {"loss": total, "sample_size": logs["ntokens"], "logs": logs}


def mlm_to_st_weights(state: dict[str, torch.Tensor], decoder_layers: int) -> dict[str, torch.Tensor]:
    """FAT-MLM weights under FAT-ST's names: front end and encoder as they are, the token embedding as the
    decoder's, encoder layer i's self-attention / feed-forward / norms as decoder layer i's, the encoder's final
    norm as the decoder's. The reconstruction head and [MASK] are dropped."""
    copied = ("self_attn.", "self_attn_norm.", "ffn.", "ffn_norm.")
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if name.startswith(("front.", "encoder.")):
            out[name] = value
        if name == "embed_tokens.weight":
            out["decoder.embed_tokens.weight"] = value
        elif name.startswith("encoder.final_norm."):
            out["decoder." + name[len("encoder.") :]] = value.clone()
        elif name.startswith("encoder.layers."):
            index, _, rest = name[len("encoder.layers.") :].partition(".")
            if int(index) < decoder_layers and rest.startswith(copied):
                out[f"decoder.layers.{index}.{rest}"] = value.clone()
    return out

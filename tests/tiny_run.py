"""A tiny ST corpus on disk (real wav files, manifests, SentencePiece) and a tiny s2t config, for the
trainer's tests: small enough that a handful of updates take a second on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from speechxl.data.manifest import write_manifest
from speechxl.data.vocab import train_vocab

PAIRS = [
    ("the red house is small", "das rote haus ist klein"),
    ("two dogs see the cat", "zwei hunde sehen die katze"),
    ("i want to buy three apples", "ich will drei äpfel kaufen"),
    ("the teacher reads a book", "der lehrer liest ein buch"),
    ("we went home yesterday", "wir sind gestern nach hause gegangen"),
    ("she has seven green birds", "sie hat sieben grüne vögel"),
    ("the old man drinks water", "der alte mann trinkt wasser"),
    ("my sister likes the sun", "meine schwester mag die sonne"),
]

TINY_MODEL = {
    "arch": "s2t",
    "size": "xs",
    "dim": 16,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_heads": 2,
    "decoder_heads": 2,
    "encoder_ffn_dim": 32,
    "decoder_ffn_dim": 32,
    "conv_channels": 16,
    "dropout": 0.1,
}


def _tone(words: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A deterministic chord per sentence plus a little noise: audio that differs between sentences."""
    t = np.arange(int(16000 * seconds)) / 16000
    freqs = [200 + 40 * (ord(w[0]) - 96) for w in words.split()]
    wave = sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)
    return (0.3 * wave + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def make_corpus(root: Path, n_train: int = 16, n_dev: int = 4) -> Path:
    """train.tsv, dev.tsv and spm.model under `root`; returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "wav").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    train_vocab([t for pair in PAIRS for t in pair] * 4, root / "spm", vocab_size=90, langs=["en", "de"])
    for split, count in (("train", n_train), ("dev", n_dev)):
        rows = []
        for i in range(count):
            en, de = PAIRS[(i * 3 + (split == "dev")) % len(PAIRS)]
            seconds = 0.2 + 0.05 * (i % 5)
            sf.write(root / "wav" / f"{split}{i}.wav", _tone(en, seconds, rng), 16000, subtype="FLOAT")
            rows.append(
                dict(
                    id=f"{split}{i}",
                    audio=f"wav/{split}{i}.wav",
                    n_frames=int(16000 * seconds),
                    tgt_text=de,
                    speaker="spk",
                    src_text=en,
                    src_lang="en",
                    tgt_lang="de",
                )
            )
        write_manifest(root / f"{split}.tsv", rows)
    return root


def tiny_config(corpus: Path, run_dir: Path, **train: object) -> dict:
    """A complete experiment config (as a YAML dict) for the tiny corpus; `train` overrides that section."""
    return {
        "run_dir": str(run_dir),
        "model": dict(TINY_MODEL),
        "data": {"manifest_dir": str(corpus), "tasks": ["st"], "max_tokens": 200, "max_sentences": 4},
        "train": {
            "seed": 3,
            "lr": 2e-3,
            "warmup_updates": 4,
            "max_update": 6,
            "device": "cpu",
            "log_every": 1,
            "validate_every": 3,
            "save_every": 3,
            "keep_last": 5,
            "keep_best": 1,
            "valid_beam": 2,
            "valid_max_sentences": 4,
            **train,
        },
    }


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path

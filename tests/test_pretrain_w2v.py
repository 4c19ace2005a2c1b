"""pretrain-w2v: the contrastive loss falls, the checkpoint loads as an encoder, resuming is exact."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch
from safetensors.torch import load_file

from speechxl.cli import main
from speechxl.data.manifest import write_manifest
from speechxl.modules.wav2vec2 import Wav2Vec2Encoder
from speechxl.train.pretrain_w2v import PretrainOptions, pretrain_wav2vec2


def synthetic_corpus(directory, count=8, short=0):
    """Harmonic tones with pitch contours and on/off envelopes: structure a model can predict."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count + short):
        n = int(rng.integers(16000, 24000)) if i < count else 2000
        t = np.arange(n) / 16000
        f0 = rng.uniform(100, 300) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / 16000
        envelope = (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0) * 0.8 + 0.2
        wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * envelope * 0.3 + 0.01 * rng.standard_normal(n)
        sf.write(directory / f"u{i}.wav", wave.astype(np.float32), 16000)
        rows.append(
            {
                "id": f"u{i}",
                "audio": f"u{i}.wav",
                "n_frames": n,
                "tgt_text": "",
                "speaker": "s",
                "src_text": "",
                "src_lang": "en",
                "tgt_lang": "de",
            }
        )
    rows.append(
        {
            "id": "text",
            "audio": "",
            "n_frames": 0,
            "tgt_text": "x",
            "speaker": "",
            "src_text": "y",
            "src_lang": "en",
            "tgt_lang": "de",
        }
    )
    write_manifest(directory / "train.tsv", rows)
    return directory / "train.tsv"


def run_pretraining(tmp_path, updates: int, count: int = 4) -> list[float]:
    manifest = synthetic_corpus(tmp_path, count=count)
    main(
        [
            "pretrain-w2v",
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "run"),
            "--config",
            "tiny",
            "--max-updates",
            str(updates),
            "--lr",
            "5e-3",
            "--warmup-updates",
            "5",
            "--max-tokens",
            "50000",
        ]
    )
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [record["update"] for record in log] == list(range(1, updates + 1))
    return [record["contrastive_loss"] for record in log]


def test_contrastive_loss_falls_and_checkpoint_loads_as_encoder(tmp_path):
    losses = run_pretraining(tmp_path, updates=12)
    assert np.mean(losses[-4:]) < np.mean(losses[:3]) - 0.1
    encoder = Wav2Vec2Encoder.from_pretrained(tmp_path / "run" / "checkpoints" / "last").eval()
    states, _ = encoder(torch.randn(1, 8000))
    assert states.shape == (1, 24, 32) and torch.isfinite(states).all()


def test_resume_continues_exactly_and_skips_are_counted(tmp_path):
    manifest = synthetic_corpus(tmp_path, count=4, short=1)
    # warmup longer than the run: the learning rate does not depend on max_updates
    options = dict(lr=1e-3, warmup_updates=100, max_tokens=50000, seed=3)
    straight = pretrain_wav2vec2(
        manifest, tmp_path / "a", config="tiny", options=PretrainOptions(max_updates=4, **options)
    )
    pretrain_wav2vec2(manifest, tmp_path / "b", config="tiny", options=PretrainOptions(max_updates=2, **options))
    resumed = pretrain_wav2vec2(
        manifest, tmp_path / "b", config="tiny", options=PretrainOptions(max_updates=4, **options)
    )
    assert straight["skipped"] == 2  # one too-short utterance, one text-only row
    assert resumed["update"] == 4
    a = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    assert len((tmp_path / "b" / "train_log.jsonl").read_text().splitlines()) == 4

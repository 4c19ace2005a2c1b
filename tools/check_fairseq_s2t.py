"""Parity check: our fairseq S2T data export/import and s2t_transformer converter against fairseq itself.

Needs a THROW-AWAY venv with fairseq (never the project venv; not imported by the tests):

    python3 -m venv /tmp/fsenv && /tmp/fsenv/bin/pip install torch==2.13.0 setuptools wheel cython numpy
    /tmp/fsenv/bin/pip install --no-build-isolation fairseq-fixed==0.12.3.1
    /tmp/fsenv/bin/pip uninstall -y torchaudio
    /tmp/fsenv/bin/pip install sentencepiece soundfile   # fairseq's SentencePiece tokenizer and its audio reader

Step 1 (project venv): a tiny ST corpus (tone "speech", SentencePiece with <de> tags), exported with
`speechxl fairseq export` to DIR/fs (fbank80.zip, {train,dev}_st.tsv, config_st.yaml, spm_*.txt):
    python tools/check_fairseq_s2t.py export DIR
Step 2 (fairseq venv): fairseq's SpeechToTextDatasetCreator loads DIR/fs (items saved); fairseq builds a random
s2t_transformer_xs through its speech_to_text task, saves it as its trainer does (DIR/checkpoint_best.pt), and
saves its logits on the dev batch and its beam-5 outputs (SequenceGenerator, forced <lang:de> prefix):
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/fsenv/bin/python tools/check_fairseq_s2t.py make DIR
Step 3 (project venv): our reading of DIR/fs against fairseq's items, `speechxl convert fairseq-s2t`, our logits and
beam-5 outputs against fairseq's; one JSON line per check:
    python tools/check_fairseq_s2t.py compare DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

SPLIT = "dev_st"
BEAM, MAX_LEN_B = 5, 20


def export(directory: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from speechxl.data.fairseq_prep import export_fairseq_data
    from tests.tiny_run import make_corpus

    corpus = make_corpus(Path(directory) / "corpus", n_train=8, n_dev=6)
    print(json.dumps(export_fairseq_data(corpus, Path(directory) / "fs", ["train", "dev"])))
    print(json.dumps(export_fairseq_data(corpus, Path(directory) / "fs_flac", ["dev"], audio="flac")))


def _load_items(root: Path, split: str, out: Path) -> int:
    """fairseq's SpeechToTextDatasetCreator on an exported directory; items saved to `out`."""
    from argparse import Namespace

    from fairseq.data import Dictionary, encoders
    from fairseq.data.audio.speech_to_text_dataset import S2TDataConfig, SpeechToTextDatasetCreator

    cfg = S2TDataConfig(root / "config_st.yaml")
    tgt_dict = Dictionary.load(str(root / cfg.vocab_filename))
    bpe = encoders.build_bpe(Namespace(**cfg.bpe_tokenizer))
    dataset = SpeechToTextDatasetCreator.from_tsv(
        str(root), cfg, split, tgt_dict, None, bpe, is_train_split=False, epoch=1, seed=1
    )
    from fairseq.data.audio.audio_utils import get_features_or_waveform

    # what fairseq's reader returns for each byte range, before the dataset's own processing
    raw = [get_features_or_waveform(p, need_waveform=cfg.use_audio_input) for p in dataset.audio_paths]
    np.savez(
        out,
        **{f"source{i}": dataset[i].source.numpy() for i in range(len(dataset))},
        **{f"target{i}": dataset[i].target.numpy() for i in range(len(dataset))},
        **{f"raw{i}": raw[i] for i in range(len(dataset))},
    )
    return len(dataset)


def make(directory: str) -> None:
    from fairseq import checkpoint_utils, tasks
    from fairseq.models.speech_to_text.s2t_transformer import s2t_transformer_xs
    from fairseq.sequence_generator import SequenceGenerator

    fs = Path(directory) / "fs"
    # flac.zip: fairseq's get_waveform always calls convert_waveform, which imports torchaudio even when there is
    # nothing to convert (16 kHz mono in, 16 kHz mono out); the venv has no torchaudio, so that no-op is bypassed
    from fairseq.data.audio import audio_utils

    audio_utils.convert_waveform = lambda waveform, sample_rate, **_: (waveform, sample_rate)
    flac_items = _load_items(Path(directory) / "fs_flac", SPLIT, Path(directory) / "fairseq_flac_items.npz")
    args = argparse.Namespace(
        task="speech_to_text",
        arch="s2t_transformer_xs",
        data=str(fs),
        config_yaml="config_st.yaml",
        max_source_positions=6000,
        max_target_positions=1024,
        input_feat_per_channel=80,
        input_channels=1,
        criterion="label_smoothed_cross_entropy",
        seed=1,
        train_subset="train_st",
        speaker_to_id=None,
        share_decoder_input_output_embed=True,
    )  # as fairseq's MuST-C/CoVoST recipes train (speechxl ties them)
    s2t_transformer_xs(args)  # fairseq's own preset fills the architecture
    task = tasks.setup_task(args)
    task.load_dataset(SPLIT)
    dataset = task.datasets[SPLIT]
    items = [dataset[i] for i in range(len(dataset))]
    np.savez(
        Path(directory) / "fairseq_items.npz",
        **{f"source{i}": item.source.numpy() for i, item in enumerate(items)},
        **{f"target{i}": item.target.numpy() for i, item in enumerate(items)},
        ids=np.array([dataset.ids[i] for i in range(len(dataset))]),
    )
    torch.manual_seed(0)
    model = task.build_model(args).eval()
    with torch.no_grad():
        # non-trivial norms and biases, so a mis-mapped one shows; unit-scale weights spread the output
        # distribution so search decisions are clear-cut, and a nudge towards </s> ends outputs at different lengths
        for key, param in model.named_parameters():
            if "norm" in key or key.endswith("bias"):
                param.add_(0.1 * torch.randn_like(param))
            elif param.dim() >= 2 and "embed_tokens" not in key:
                param.normal_(0.0, param[0].numel() ** -0.5)
        embed = model.decoder.embed_tokens.weight
        embed.normal_(0.0, 1.0)
        embed[2] += 0.3 * model.decoder.layer_norm.bias.normal_(0.0, 1.0)
    state = {
        "args": None,
        "cfg": {"model": args, "task": {"_name": "speech_to_text", "data": str(fs)}},
        "model": model.state_dict(),
        "optimizer_history": [],
        "extra_state": {},
    }
    checkpoint_utils.torch_persistent_save(state, str(Path(directory) / "checkpoint_best.pt"))
    sample = dataset.collater([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logits = model(**sample["net_input"])[0]
    generator = SequenceGenerator([model], task.target_dictionary, beam_size=BEAM, max_len_a=0, max_len_b=MAX_LEN_B)
    prefix = sample["target"][:, :1] if dataset.cfg.prepend_tgt_lang_tag else None
    with torch.no_grad():
        hyps = generator.generate([model], sample, prefix_tokens=prefix)
    order = sample["id"].tolist()  # the collater sorts by length: index -> dataset item
    np.savez(
        Path(directory) / "fairseq_outputs.npz",
        logits=logits.numpy(),
        order=np.array(order),
        prev=sample["net_input"]["prev_output_tokens"].numpy(),
    )
    (Path(directory) / "fairseq_beam.json").write_text(
        json.dumps(
            {
                str(index): [{"tokens": x["tokens"].tolist(), "score": float(x["score"])} for x in h]
                for index, h in zip(order, hyps)
            }
        )
    )
    print(
        json.dumps(
            {
                "items": len(items),
                "flac_items": flac_items,
                "checkpoint": str(Path(directory) / "checkpoint_best.pt"),
                "state_keys": sorted(model.state_dict())[:8],
            }
        )
    )


def compare(directory: str) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from speechxl.convert.fairseq_s2t import convert_fairseq_s2t
    from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
    from speechxl.data.fairseq_config import read_dictionary, read_fairseq_config
    from speechxl.data.vocab import Vocab
    from speechxl.inference.search import beam_search
    from speechxl.models import load_model

    directory = Path(directory)
    fs = directory / "fs"
    ref = np.load(directory / "fairseq_items.npz")
    cfg = read_fairseq_config(fs / "config_st.yaml")
    vocab = Vocab.load(cfg.spm_model, pieces=read_dictionary(cfg.dictionary))
    ours = SpeechTextDataset.from_manifest(
        fs / f"{SPLIT}.tsv",
        "st",
        vocab,
        features=FeatureConfig.from_data(cfg.data),
        prepend_lang_tag=cfg.data["prepend_lang_tag"],
    )
    # the same utterances read from the original speechxl manifest (fbank computed from the wav files, and the
    # native float64 utterance CMVN: it differs from fairseq's float32 arithmetic on near-constant bands)
    original = SpeechTextDataset.from_manifest(
        directory / "corpus" / "dev.tsv", "st", Vocab.load(directory / "corpus" / "spm.model")
    )
    source_diff = max(float(np.abs(ours[i].audio.numpy() - ref[f"source{i}"]).max()) for i in range(len(ours)))
    original_diff = max(float(np.abs(original[i].audio.numpy() - ref[f"source{i}"]).max()) for i in range(len(ours)))
    targets_equal = all(
        ours[i].target.tolist() == ref[f"target{i}"].tolist()
        and original[i].target.tolist() == ref[f"target{i}"].tolist()
        for i in range(len(ours))
    )
    print(
        json.dumps(
            {
                "check": "dataset items",
                "n": len(ours),
                "ids_equal": list(ref["ids"]) == ours.ids,
                "source_max_abs_diff_fs_layout": source_diff,
                "source_max_abs_diff_from_wav_native_cmvn": original_diff,
                "targets_equal": targets_equal,
            }
        )
    )

    flac_ref = np.load(directory / "fairseq_flac_items.npz")
    flac_cfg = read_fairseq_config(directory / "fs_flac" / "config_st.yaml")
    flac = SpeechTextDataset.from_manifest(
        directory / "fs_flac" / f"{SPLIT}.tsv",
        "st",
        vocab,
        features=FeatureConfig.from_data(flac_cfg.data),
        prepend_lang_tag=flac_cfg.data["prepend_lang_tag"],
    )
    print(
        json.dumps(
            {
                "check": "flac.zip dataset items",
                "n": len(flac),
                "features": flac_cfg.data["features"],
                # fairseq's reader (get_features_or_waveform on the byte range) against ours
                "reader_wave_max_abs_diff": max(
                    float(np.abs(flac[i].audio.numpy() - flac_ref[f"raw{i}"].reshape(-1)).max())
                    for i in range(len(flac))
                ),
                # fairseq 0.12.3's dataset item: S2TDataConfig.standardize_audio lacks @property, so the bound
                # method is always true and every waveform is layer-normed; ours standardised the same way
                "item_vs_standardised_wave_max_abs_diff": max(
                    float(
                        np.abs(
                            torch.nn.functional.layer_norm(flac[i].audio, flac[i].audio.shape).numpy()
                            - flac_ref[f"source{i}"].reshape(-1)
                        ).max()
                    )
                    for i in range(len(flac))
                ),
                "targets_equal": all(
                    flac[i].target.tolist() == flac_ref[f"target{i}"].tolist() for i in range(len(flac))
                ),
            }
        )
    )

    out = directory / "converted"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    convert_fairseq_s2t(directory / "checkpoint_best.pt", out, config=fs / "config_st.yaml")
    model, vocab, config = load_model(out)
    outputs = np.load(directory / "fairseq_outputs.npz")
    order = outputs["order"].tolist()
    batch = ours.collate([ours[i] for i in order])
    with torch.no_grad():
        enc = model.encode(batch)
        logits = model.decoder(torch.from_numpy(outputs["prev"]), enc["memory"], enc["memory_padding_mask"])
    pad = torch.from_numpy(outputs["prev"]) == vocab.pad  # fairseq's logits at padded target positions are unused
    diff = (logits - torch.from_numpy(outputs["logits"])).abs()[~pad]
    print(json.dumps({"check": "logits", "shape": list(logits.shape), "max_abs_diff": float(diff.max())}))

    fairseq_beam = json.loads((directory / "fairseq_beam.json").read_text())
    with torch.no_grad():
        hyps = beam_search(model, batch, beam=BEAM, max_len_b=MAX_LEN_B, prefix=batch["prefix"], nbest=BEAM)
    best_equal, nbest_equal, score_diff, lengths = 0, 0, 0.0, []
    for index, nbest in zip(order, hyps):
        reference = [
            r["tokens"][:-1] if r["tokens"][-1] == vocab.eos else r["tokens"] for r in fairseq_beam[str(index)]
        ]
        best_equal += nbest[0].tokens == reference[0]
        nbest_equal += [h.tokens for h in nbest] == reference
        score_diff = max(score_diff, *(abs(h.score - r["score"]) for h, r in zip(nbest, fairseq_beam[str(index)])))
        lengths.append([len(tokens) for tokens in reference])
    print(
        json.dumps(
            {
                "check": f"beam {BEAM}",
                "best_equal": best_equal,
                "nbest_lists_equal": nbest_equal,
                "of": len(order),
                "score_max_abs_diff": score_diff,
                "output_lengths": lengths,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["export", "make", "compare"])
    parser.add_argument("directory")
    a = parser.parse_args()
    os.makedirs(a.directory, exist_ok=True)
    {"export": export, "make": make, "compare": compare}[a.step](a.directory)

"""Offline translation from a checkpoint directory: manifest order, references, score JSON, audio files."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_run import make_corpus, tiny_config

from speechxl.cli import main
from speechxl.config import config_from_dict
from speechxl.data.dataset import SpeechTextDataset
from speechxl.data.manifest import read_manifest
from speechxl.inference.search import beam_search
from speechxl.models import load_model
from speechxl.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("translate")
    corpus = make_corpus(root / "corpus")
    cfg = config_from_dict(tiny_config(corpus, root / "run", max_update=6, validate_every=0, save_every=0))
    train(cfg)
    return corpus, root / "run" / "checkpoints" / "last"


def test_translate_manifest_writes_hypotheses_in_manifest_order_and_scores(tmp_path, trained, capsys):
    corpus, checkpoint = trained
    out = tmp_path / "decode"
    main(
        [
            "translate",
            "--checkpoint",
            str(checkpoint),
            "--manifest",
            str(corpus / "dev.tsv"),
            "--out",
            str(out),
            "--beam",
            "3",
            "--max-len-b",
            "12",
            "--max-tokens",
            "60",
        ]
    )  # a small budget: several batches
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = read_manifest(corpus / "dev.tsv")
    hyps = (out / "hyp.txt").read_text().splitlines()
    assert (out / "ref.txt").read_text().splitlines() == [r["tgt_text"] for r in rows]
    assert (out / "ids.txt").read_text().splitlines() == [r["id"] for r in rows]
    score = json.loads((out / "score.json").read_text())
    assert score == printed and score["n"] == len(rows) and "tok:13a" in score["signature"]

    # each line is what beam search gives for that utterance alone, with the target tag forced
    model, vocab, config = load_model(checkpoint)
    dataset = SpeechTextDataset(rows, "st", vocab, manifest=corpus / "dev.tsv")
    for i, row in enumerate(rows):
        batch = dataset.collate([dataset[i]])
        prefix = torch.tensor([[vocab.tag(row["tgt_lang"])]])
        with torch.no_grad():
            best = beam_search(model, batch, beam=3, max_len_b=12, prefix=prefix)[0][0]
        assert hyps[i] == vocab.decode(best.tokens)


def test_translate_audio_files_without_references(tmp_path, trained):
    corpus, checkpoint = trained
    wavs = sorted(str(p) for p in (corpus / "wav").glob("dev*.wav"))
    out = tmp_path / "audio"
    main(["translate", "--checkpoint", str(checkpoint), "--audio", *wavs, "--out", str(out), "--max-len-b", "8"])
    assert len((out / "hyp.txt").read_text().splitlines()) == len(wavs)
    assert not (out / "ref.txt").exists()
    assert "bleu" not in json.loads((out / "score.json").read_text())


def test_translate_unreadable_audio_names_the_file(tmp_path, trained):
    _, checkpoint = trained
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    with pytest.raises(SystemExit, match="broken.wav"):
        main(["translate", "--checkpoint", str(checkpoint), "--audio", str(bad), "--out", str(tmp_path / "o")])


def test_every_input_gets_its_line_and_failures_are_named(tmp_path, trained, capsys):
    """One output line per input in input order; an input that cannot be translated gets an empty line,
    is named with its reason on stderr and in score.json, and the others are still translated."""
    import soundfile as sf

    corpus, checkpoint = trained
    wavs = sorted(str(p) for p in (corpus / "wav").glob("dev*.wav"))[:2]
    short = tmp_path / "short.wav"
    sf.write(short, [0.0] * 100, 16000)  # 6 ms: shorter than one 25 ms window
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    inputs = [wavs[0], str(short), str(tmp_path / "missing.wav"), wavs[1], str(broken)]
    out = tmp_path / "out"
    main(["translate", "--checkpoint", str(checkpoint), "--audio", *inputs, "--out", str(out), "--max-len-b", "8"])
    lines = (out / "hyp.txt").read_text().split("\n")[:-1]
    assert len(lines) == len(inputs) and lines[1] == lines[2] == lines[4] == ""
    alone = tmp_path / "alone"
    main(
        [
            "translate",
            "--checkpoint",
            str(checkpoint),
            "--audio",
            wavs[0],
            wavs[1],
            "--out",
            str(alone),
            "--max-len-b",
            "8",
        ]
    )
    assert [lines[0], lines[3]] == (alone / "hyp.txt").read_text().splitlines()
    failed = json.loads((out / "score.json").read_text())["failed"]
    assert [(f["input"], f["reason"].split(":")[0]) for f in failed] == [
        (str(short), "audio shorter than one 25 ms window"),
        (str(tmp_path / "missing.wav"), "file not found"),
        (str(broken), "cannot read audio"),
    ]
    err = capsys.readouterr().err
    assert all(f"{f['input']}: not translated" in err for f in failed)


def test_a_model_with_two_outputs_gets_a_file_and_a_score_for_each(tmp_path, trained):
    """The decode path takes the output texts from the model's hook: a model that writes a transcript beside
    its translation (COSTT) gets hyp.transcript.txt and a WER under score.json["transcript"]."""
    import shutil

    import yaml

    from speechxl.models.base import ARCHS
    from speechxl.models.s2t import S2TTransformer

    class TwoOutputs(S2TTransformer):
        def output_texts(self, tokens, vocab, task):
            text = vocab.decode(tokens)
            return {"translation": text, "transcript": text.lower()[::-1]}

    corpus, checkpoint = trained
    shutil.copytree(checkpoint, tmp_path / "ckpt", ignore=shutil.ignore_patterns("trainer.pt"))
    config = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    config["model"]["arch"] = "two_outputs"
    (tmp_path / "ckpt" / "config.yaml").write_text(yaml.safe_dump(config))
    ARCHS["two_outputs"] = TwoOutputs
    try:
        score = translate_cli(tmp_path / "ckpt", corpus / "dev.tsv", tmp_path / "out")
    finally:
        del ARCHS["two_outputs"]
    out = tmp_path / "out"
    translations = (out / "hyp.txt").read_text().splitlines()
    assert (out / "hyp.transcript.txt").read_text().splitlines() == [t.lower()[::-1] for t in translations]
    rows = read_manifest(corpus / "dev.tsv")
    assert (out / "ref.transcript.txt").read_text().splitlines() == [r["src_text"] for r in rows]
    assert "bleu" in score and set(score["transcript"]) >= {"wer", "errors", "ref_words"}


def translate_cli(checkpoint, manifest, out):
    main(
        [
            "translate",
            "--checkpoint",
            str(checkpoint),
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--max-len-b",
            "8",
        ]
    )
    return json.loads((out / "score.json").read_text())

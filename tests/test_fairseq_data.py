"""fairseq S2T interop: zipped data read as stored, config mapping, prep/export round trip, checkpoint import.

The fixtures are written the way fairseq's `examples/speech_to_text/data_utils.py` writes them (create_zip:
ZIP_STORED with `f.write(path, arcname)`; get_zip_manifest: offset = header_offset + 30 + len(filename)),
independently of speechxl's own writer. fairseq itself is not installed here: tools/check_fairseq_s2t.py runs
the same data and a real fairseq checkpoint through fairseq.
"""

import argparse
import json
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from speechxl.cli import main
from speechxl.data.audio import compute_fbank, utterance_cmvn
from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
from speechxl.data.fairseq_config import read_dictionary, read_fairseq_config
from speechxl.data.manifest import read_manifest
from speechxl.data.zipped import load_zip_entry
from speechxl.errors import DataError
from speechxl.models import load_model
from tests.tiny_run import make_corpus, tiny_config, write_config

FAIRSEQ_HEADER = ["id", "audio", "n_frames", "tgt_text", "speaker"]  # a bilingual MuST-C manifest


def fairseq_zip(directory, zip_name, files, compression=zipfile.ZIP_STORED):
    """fairseq's create_zip + get_zip_manifest: member stem -> 'zip:offset:length'."""
    zip_path = directory / zip_name
    with zipfile.ZipFile(zip_path, "w", compression) as f:
        for path in files:
            f.write(path, arcname=path.name)
    with zipfile.ZipFile(zip_path) as f:
        return {
            info.filename.rsplit(".", 1)[0]: f"{zip_name}:{info.header_offset + 30 + len(info.filename)}:"
            f"{info.file_size}"
            for info in f.infolist()
        }


def write_tsv(path, header, rows):
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(str(r[c]) for c in header) for r in rows]) + "\n")


@pytest.fixture
def fairseq_dir(tmp_path):
    """A fairseq-prepared directory: fbank80.zip (80-dim .npy) and flac.zip, manifests without languages."""
    root = tmp_path / "fs"
    (root / "feats").mkdir(parents=True)
    rng = np.random.default_rng(0)
    feats, waves = {}, {}
    for i, frames in enumerate((31, 17, 45)):
        feats[f"utt{i}"] = (rng.standard_normal((frames, 80)) * 3 + 2).astype(np.float32)
        np.save(root / "feats" / f"utt{i}.npy", feats[f"utt{i}"])
        waves[f"utt{i}"] = (0.2 * np.sin(np.arange(4000 + 800 * i) * 0.05 * (i + 1))).astype(np.float32)
        sf.write(root / "feats" / f"utt{i}.flac", waves[f"utt{i}"], 16000)
    fbank = fairseq_zip(root, "fbank80.zip", sorted((root / "feats").glob("*.npy")))
    flac = fairseq_zip(root, "flac.zip", sorted((root / "feats").glob("*.flac")))
    texts = ["das ist gut", "ein hund", "die katze sitzt"]
    write_tsv(
        root / "tst_st.tsv",
        FAIRSEQ_HEADER,
        [
            dict(id=k, audio=fbank[k], n_frames=len(v), tgt_text=texts[i], speaker="spk")
            for i, (k, v) in enumerate(feats.items())
        ],
    )
    write_tsv(
        root / "tst_flac_st.tsv",
        FAIRSEQ_HEADER,
        [
            dict(id=k, audio=flac[k], n_frames=len(v), tgt_text=texts[i], speaker="spk")
            for i, (k, v) in enumerate(waves.items())
        ],
    )
    return root, feats, waves


class _NoTags:
    pad, eos = 1, 2

    def encode(self, text):
        return [5 + len(w) for w in text.split()]

    def tag(self, name):
        raise KeyError(name)

    def has_tag(self, name):
        return False


def test_zipped_features_read_exactly_as_stored(fairseq_dir):
    root, feats, waves = fairseq_dir
    manifest = root / "tst_st.tsv"
    raw = SpeechTextDataset.from_manifest(
        manifest, "st", _NoTags(), features=FeatureConfig(cmvn=False), prepend_lang_tag=False
    )
    cmvn = SpeechTextDataset.from_manifest(manifest, "st", _NoTags(), prepend_lang_tag=False)
    fairseq_cmvn = SpeechTextDataset.from_manifest(
        manifest,
        "st",
        _NoTags(),
        prepend_lang_tag=False,
        features=FeatureConfig.from_data({"cmvn": "utterance_fairseq"}),
    )
    for i, (key, matrix) in enumerate(feats.items()):
        assert raw[i].id == key
        assert np.array_equal(raw[i].audio.numpy(), matrix)  # as stored, no fbank recomputation
        np.testing.assert_array_equal(cmvn[i].audio.numpy(), utterance_cmvn(matrix))  # CMVN per the config
        assert raw.sizes[i] == len(matrix)  # n_frames counts feature frames for a stored matrix
        # fairseq's UtteranceCMVN, transcribed: float32 arithmetic, var = sum(x^2)/n - mean^2 floored at 1e-10
        mean, square_sums = matrix.mean(axis=0), (matrix**2).sum(axis=0)
        expected = (matrix - mean) / np.sqrt(np.maximum(square_sums / matrix.shape[0] - mean**2, 1e-10))
        assert np.array_equal(fairseq_cmvn[i].audio.numpy(), expected.astype(np.float32))
    # SpecAugment still applies when training on stored features
    train = SpeechTextDataset.from_manifest(
        manifest,
        "st",
        _NoTags(),
        prepend_lang_tag=False,
        train=True,
        features=FeatureConfig(specaugment="freq_mask_F=30,freq_mask_N=2,time_mask_T=10,time_mask_N=2"),
    )
    assert not np.array_equal(train[(1, 0)].audio.numpy(), cmvn[0].audio.numpy())
    # flac.zip members are audio: decoded, then fbank as for any audio
    flac = SpeechTextDataset.from_manifest(
        root / "tst_flac_st.tsv", "st", _NoTags(), prepend_lang_tag=False, features=FeatureConfig(cmvn=False)
    )
    for i, key in enumerate(waves):
        kind, decoded = load_zip_entry(read_manifest(root / "tst_flac_st.tsv")[i]["audio"], root)
        stored, _ = sf.read(root / "feats" / f"{key}.flac", dtype="float32")
        assert kind == "wave" and np.array_equal(decoded, stored)
        np.testing.assert_array_equal(flac[i].audio.numpy(), compute_fbank(stored))


def test_global_cmvn_uses_the_stats_file(fairseq_dir, tmp_path):
    root, feats, _ = fairseq_dir
    mean, std = np.linspace(-1, 1, 80).astype(np.float32), np.linspace(0.5, 2, 80).astype(np.float32)
    np.savez(tmp_path / "gcmvn.npz", mean=mean, std=std)
    config = FeatureConfig.from_data({"cmvn": "global", "global_cmvn_stats": str(tmp_path / "gcmvn.npz")})
    ds = SpeechTextDataset.from_manifest(root / "tst_st.tsv", "st", _NoTags(), features=config, prepend_lang_tag=False)
    np.testing.assert_allclose(ds[2].audio.numpy(), (feats["utt2"] - mean) / std, rtol=1e-6)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda spec: (lambda path, offset, length: f"{path}:{int(offset) + 1}:{length}")(*spec.rsplit(":", 2)),
            "is not the start of any member",
        ),
        (lambda spec: spec.rsplit(":", 1)[0] + ":12", "does not match member"),
        (lambda spec: "missing.zip:" + spec.split(":", 1)[1], "no such zip file"),
    ],
)
def test_a_bad_byte_range_names_the_manifest_line(fairseq_dir, damage, message):
    root, _, _ = fairseq_dir
    rows = read_manifest(root / "tst_st.tsv")
    rows[1]["audio"] = damage(rows[1]["audio"])
    write_tsv(root / "bad.tsv", FAIRSEQ_HEADER, rows)
    with pytest.raises(DataError, match=message) as err:
        SpeechTextDataset.from_manifest(root / "bad.tsv", "st", _NoTags(), prepend_lang_tag=False)
    assert err.value.line == 3 and "bad.tsv" in str(err.value)


def test_a_compressed_zip_is_refused(fairseq_dir):
    root, _, _ = fairseq_dir
    entries = fairseq_zip(root, "deflated.zip", sorted((root / "feats").glob("*.npy")), zipfile.ZIP_DEFLATED)
    write_tsv(
        root / "deflated.tsv",
        FAIRSEQ_HEADER,
        [dict(id=k, audio=v, n_frames=3, tgt_text="x", speaker="s") for k, v in entries.items()],
    )
    with pytest.raises(DataError, match="compressed") as err:
        SpeechTextDataset.from_manifest(root / "deflated.tsv", "st", _NoTags(), prepend_lang_tag=False)
    assert err.value.line == 2


def test_stored_features_for_a_wave_model_are_an_error(fairseq_dir):
    root, _, _ = fairseq_dir
    with pytest.raises(DataError, match="stored fbank features"):
        SpeechTextDataset.from_manifest(
            root / "tst_st.tsv", "st", _NoTags(), prepend_lang_tag=False, features=FeatureConfig(features="wave")
        )


def fairseq_config(path, **extra):
    """What fairseq's gen_config_yaml writes (lb policy, utterance CMVN), plus `extra`."""
    config = {
        "vocab_filename": "spm_unigram.txt",
        "input_channels": 1,
        "input_feat_per_channel": 80,
        "specaugment": {
            "time_wrap_W": 0,
            "freq_mask_N": 1,
            "freq_mask_F": 27,
            "time_mask_N": 1,
            "time_mask_T": 100,
            "time_mask_p": 1.0,
        },
        "transforms": {"_train": ["utterance_cmvn", "specaugment"], "*": ["utterance_cmvn"]},
        "bpe_tokenizer": {"bpe": "sentencepiece", "sentencepiece_model": str(path.parent / "spm_unigram.model")},
        **extra,
    }
    path.write_text(yaml.dump(config))
    return path


def test_fairseq_config_maps_onto_ours(tmp_path):
    path = fairseq_config(tmp_path / "config_st.yaml", prepend_tgt_lang_tag=True)
    fs = read_fairseq_config(path)
    assert fs.dictionary == tmp_path / "spm_unigram.txt" and fs.spm_model == tmp_path / "spm_unigram.model"
    assert fs.data["prepend_lang_tag"] is True and fs.data["cmvn"] == "utterance_fairseq"
    from speechxl.data.audio import SpecAugment

    assert SpecAugment.from_policy(fs.data["specaugment"]) == SpecAugment.from_policy("lb")
    np.savez(tmp_path / "stats.npz", mean=np.zeros(80), std=np.ones(80))
    glob = read_fairseq_config(
        fairseq_config(
            tmp_path / "g.yaml", global_cmvn={"stats_npz_path": "stats.npz"}, transforms={"*": ["global_cmvn"]}
        )
    )
    assert glob.data["cmvn"] == "global" and glob.data["global_cmvn_stats"] == str(tmp_path / "stats.npz")
    assert glob.data["specaugment"] == ""
    split_named = read_fairseq_config(
        fairseq_config(
            tmp_path / "e.yaml", transforms={"_eval": ["utterance_cmvn"], "_train": ["utterance_cmvn", "specaugment"]}
        )
    )
    assert split_named.data["cmvn"] == "utterance_fairseq" and split_named.data["specaugment"]
    for extra, key in (
        ({"waveform_transforms": {"*": ["noise"]}}, "waveform_transforms"),
        ({"transforms": {"train_st": ["utterance_cmvn"]}}, "train_st"),
        ({"transforms": {"_train": ["global_cmvn"], "*": ["utterance_cmvn"]}}, "differently"),
        ({"transforms": {"*": ["delta_deltas"]}}, "delta_deltas"),
        ({"bpe_tokenizer": {"bpe": "gpt2"}}, "bpe_tokenizer.bpe"),
        ({"specaugment": {"freq_mask_X": 1}}, "freq_mask_X"),
    ):
        with pytest.raises(DataError, match=key):
            read_fairseq_config(fairseq_config(tmp_path / "bad.yaml", **extra))


def test_fairseq_dictionary_ids(tmp_path):
    (tmp_path / "d.txt").write_text("▁the 12\n<lang:de> 1 #fairseq:overwrite\ns 3\n")
    assert read_dictionary(tmp_path / "d.txt") == ["<s>", "<pad>", "</s>", "<unk>", "▁the", "<lang:de>", "s"]
    (tmp_path / "d.txt").write_text("▁the 12\n▁the 3\n")
    with pytest.raises(DataError, match="duplicate") as err:
        read_dictionary(tmp_path / "d.txt")
    assert err.value.line == 2


def test_export_then_prep_round_trip_and_train(tmp_path):
    """speechxl -> fairseq layout -> speechxl: the stored features equal ours computed from audio, the
    dictionary keeps our ids, and `speechxl train` runs on the imported directory unchanged."""
    corpus = make_corpus(tmp_path / "corpus", n_train=6, n_dev=2)
    main(
        ["fairseq", "export", "--manifest-dir", str(corpus), "--splits", "train", "dev", "--out", str(tmp_path / "fs")]
    )
    fs = tmp_path / "fs"
    assert (fs / "fbank80.zip").is_file() and (fs / "train_st.tsv").is_file()
    with zipfile.ZipFile(fs / "fbank80.zip") as archive:
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    config = yaml.safe_load((fs / "config_st.yaml").read_text())
    assert config["prepend_tgt_lang_tag"] is True and config["transforms"]["*"] == ["utterance_cmvn"]
    pieces = read_dictionary(fs / config["vocab_filename"])
    from speechxl.data.vocab import Vocab

    ours = Vocab.load(corpus / "spm.model")
    exported = Vocab.load(config["bpe_tokenizer"]["sentencepiece_model"], pieces=pieces)
    assert len(pieces) == len(ours) and exported.tag("de") == ours.tag("de") and "<lang:de>" in pieces
    computed = SpeechTextDataset.from_manifest(corpus / "train.tsv", "st", ours)
    stored = SpeechTextDataset.from_manifest(fs / "train_st.tsv", "st", exported)
    assert len(stored) == len(computed) == 6
    for i in range(len(stored)):
        assert np.array_equal(stored[i].audio.numpy(), computed[i].audio.numpy())
        assert stored[i].target.tolist() == computed[i].target.tolist()
        assert stored.sizes[i] == computed.sizes[i]

    main(
        [
            "fairseq",
            "prep",
            "--config",
            str(fs / "config_st.yaml"),
            "--manifests",
            str(fs),
            "--out",
            str(tmp_path / "imported"),
        ]
    )
    imported = yaml.safe_load((tmp_path / "imported" / "config.yaml").read_text())
    assert imported["data"]["train_split"] == "train_st" and imported["data"]["valid_split"] == "dev_st"
    assert imported["data"]["specaugment"].startswith("freq_mask_F=27")
    run = tiny_config(tmp_path / "imported", tmp_path / "run", max_update=2, validate_every=2, save_every=2)
    run["data"] = {**imported["data"], "max_tokens": 200, "max_sentences": 4}
    main(["train", "--config", str(write_config(tmp_path / "run.yaml", run))])
    model, vocab, config = load_model(tmp_path / "run" / "checkpoints" / "last")
    assert vocab.piece(vocab.tag("de")) == "<lang:de>"
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "run" / "checkpoints" / "last"),
            "--manifest",
            str(tmp_path / "imported" / "dev_st.tsv"),
            "--out",
            str(tmp_path / "hyp"),
            "--max-len-b",
            "5",
        ]
    )
    assert len((tmp_path / "hyp" / "hyp.txt").read_text().splitlines()) == 2


# ------------------------------------------------------------------------------------ checkpoint import

_HF_TO_FAIRSEQ = [
    ("model.encoder.conv.conv_layers.", "encoder.subsample.conv_layers."),
    ("model.encoder.layers.", "encoder.transformer_layers."),
    ("model.encoder.", "encoder."),
    ("model.decoder.", "decoder."),
    ("lm_head.", "decoder.output_projection."),
]


def fairseq_checkpoint(tmp_path, input_dim=80):
    """A fairseq-format s2t_transformer checkpoint built by name from a random HF Speech2Text model (what
    fairseq's trainer saves: the Namespace config under cfg['model'], buffers included)."""
    from tests.test_convert_hf import CONFIGS, write_hf_checkpoint

    CONFIGS["fs"] = dict(CONFIGS["relu-2enc-1dec"], input_feat_per_channel=input_dim)
    try:
        hf, pieces = write_hf_checkpoint(tmp_path / "hf", "fs")
    finally:
        del CONFIGS["fs"]
    state = {}
    for key, value in hf.state_dict().items():
        if key.endswith("embed_positions.weights"):
            state[key.replace("model.", "").replace("weights", "_float_tensor")] = torch.FloatTensor(1)
            continue
        for old, new in _HF_TO_FAIRSEQ:
            if key.startswith(old):
                state[new + key[len(old) :]] = value
                break
    state["decoder.version"] = torch.Tensor([3])
    args = argparse.Namespace(
        arch="s2t_transformer_xs",
        encoder_embed_dim=32,
        decoder_embed_dim=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_embed_dim=64,
        decoder_ffn_embed_dim=48,
        conv_channels=32,
        conv_kernel_sizes="5,5",
        input_feat_per_channel=input_dim,
        input_channels=1,
        dropout=0.1,
        activation_fn="relu",
        encoder_normalize_before=True,
        decoder_normalize_before=True,
        share_decoder_input_output_embed=True,
    )
    torch.save(
        {"args": None, "cfg": {"model": args, "task": {"_name": "speech_to_text"}}, "model": state},
        tmp_path / "checkpoint_best.pt",
    )
    (tmp_path / "spm_unigram.txt").write_text("".join(f"{p} 1\n" for p in pieces[4:]))
    (tmp_path / "spm_unigram.model").write_bytes((tmp_path / "hf" / "sentencepiece.bpe.model").read_bytes())
    return hf, pieces


def test_converted_fairseq_checkpoint_matches_and_translates_a_tagless_manifest(tmp_path, fairseq_dir):
    hf, pieces = fairseq_checkpoint(tmp_path)
    config = fairseq_config(tmp_path / "config_st.yaml")  # bilingual: no prepend_tgt_lang_tag
    main(
        [
            "convert",
            "fairseq-s2t",
            str(tmp_path / "checkpoint_best.pt"),
            str(tmp_path / "ours"),
            "--config",
            str(config),
        ]
    )
    model, vocab, cfg = load_model(tmp_path / "ours")
    assert cfg["data"]["prepend_lang_tag"] is False and cfg["data"]["cmvn"] == "utterance_fairseq"
    assert [vocab.piece(i) for i in range(len(vocab))] == pieces
    torch.manual_seed(1)
    features, lengths = torch.randn(2, 30, 80), torch.tensor([30, 21])
    features[1, 21:] = 0
    mask = (torch.arange(30)[None] < lengths[:, None]).long()
    prev = torch.tensor([[2, 5, 9, 7], [2, 6, 11, 1]])
    with torch.no_grad():
        reference = hf(input_features=features, attention_mask=mask, decoder_input_ids=prev).logits
        enc = model.encode({"audio": features, "audio_lengths": lengths})
        torch.testing.assert_close(
            model.decoder(prev, enc["memory"], enc["memory_padding_mask"]), reference, atol=1e-4, rtol=0
        )
    # the bilingual fairseq manifest (no language columns) translates with this model as it lies on disk
    root, _, _ = fairseq_dir
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "ours"),
            "--manifest",
            str(root / "tst_st.tsv"),
            "--out",
            str(tmp_path / "hyp"),
            "--max-len-b",
            "6",
        ]
    )
    score = json.loads((tmp_path / "hyp" / "score.json").read_text())
    assert score["n"] == 3 and "failed" not in score
    assert len((tmp_path / "hyp" / "hyp.txt").read_text().splitlines()) == 3


def test_translate_names_a_bad_byte_range_and_translates_the_rest(tmp_path, fairseq_dir):
    fairseq_checkpoint(tmp_path)
    main(
        [
            "convert",
            "fairseq-s2t",
            str(tmp_path / "checkpoint_best.pt"),
            str(tmp_path / "ours"),
            "--config",
            str(fairseq_config(tmp_path / "config_st.yaml")),
        ]
    )
    root, _, _ = fairseq_dir
    rows = read_manifest(root / "tst_st.tsv")
    path, offset, length = rows[1]["audio"].rsplit(":", 2)
    rows[1]["audio"] = f"{path}:{int(offset) + 2}:{length}"
    write_tsv(root / "bad.tsv", FAIRSEQ_HEADER, rows)
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "ours"),
            "--manifest",
            str(root / "bad.tsv"),
            "--out",
            str(tmp_path / "hyp"),
            "--max-len-b",
            "6",
        ]
    )
    score = json.loads((tmp_path / "hyp" / "score.json").read_text())
    assert [(f["line"], f["id"]) for f in score["failed"]] == [(3, "utt1")]
    assert "not the start of any member" in score["failed"][0]["reason"]
    hyps = (tmp_path / "hyp" / "hyp.txt").read_text().split("\n")[:3]
    assert hyps[1] == "" and len(hyps) == 3


def test_a_tagged_model_takes_the_languages_from_the_command_line(tmp_path, fairseq_dir):
    hf, pieces = fairseq_checkpoint(tmp_path)
    config = fairseq_config(tmp_path / "config_st.yaml", prepend_tgt_lang_tag=True)
    # a dictionary with a language tag: the tag takes the place of an ordinary piece (same size)
    (tmp_path / "spm_unigram.txt").write_text("".join(f"{p} 1\n" for p in pieces[4:-1] + ["<lang:de>"]))
    main(
        [
            "convert",
            "fairseq-s2t",
            str(tmp_path / "checkpoint_best.pt"),
            str(tmp_path / "ours"),
            "--config",
            str(config),
        ]
    )
    root, _, _ = fairseq_dir
    with pytest.raises(SystemExit, match="no tgt_lang"):
        main(
            [
                "translate",
                "--checkpoint",
                str(tmp_path / "ours"),
                "--manifest",
                str(root / "tst_st.tsv"),
                "--out",
                str(tmp_path / "hyp"),
            ]
        )
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "ours"),
            "--manifest",
            str(root / "tst_st.tsv"),
            "--out",
            str(tmp_path / "hyp"),
            "--tgt-lang",
            "de",
            "--max-len-b",
            "6",
        ]
    )
    assert len((tmp_path / "hyp" / "hyp.txt").read_text().splitlines()) == 3
    assert "failed" not in json.loads((tmp_path / "hyp" / "score.json").read_text())


def test_fairseq_checkpoint_problems_are_named(tmp_path):
    from speechxl.convert.fairseq_s2t import convert_state_dict
    from speechxl.errors import CheckpointError

    hf, pieces = fairseq_checkpoint(tmp_path, input_dim=8)
    state = torch.load(tmp_path / "checkpoint_best.pt", weights_only=False)["model"]
    with pytest.raises(CheckpointError, match="encoder.extra"):
        convert_state_dict({**state, "encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="tied"):
        convert_state_dict({**state, "decoder.output_projection.weight": state["decoder.embed_tokens.weight"] + 1})
    ckpt = torch.load(tmp_path / "checkpoint_best.pt", weights_only=False)
    ckpt["cfg"]["model"].share_decoder_input_output_embed = False  # fairseq's s2t default, untied
    torch.save(ckpt, tmp_path / "untied.pt")
    with pytest.raises(SystemExit, match="share_decoder_input_output_embed"):
        main(
            [
                "convert",
                "fairseq-s2t",
                str(tmp_path / "untied.pt"),
                str(tmp_path / "ours"),
                "--spm",
                str(tmp_path / "spm_unigram.model"),
                "--dict",
                str(tmp_path / "spm_unigram.txt"),
            ]
        )
    (tmp_path / "spm_unigram.txt").write_text("".join(f"{p} 1\n" for p in pieces[4:-2]))
    with pytest.raises(SystemExit, match="dictionary"):
        main(
            [
                "convert",
                "fairseq-s2t",
                str(tmp_path / "checkpoint_best.pt"),
                str(tmp_path / "ours"),
                "--spm",
                str(tmp_path / "spm_unigram.model"),
                "--dict",
                str(tmp_path / "spm_unigram.txt"),
            ]
        )

"""XSTNet on a tiny real corpus (wav files, manifests, SentencePiece) through the real dataset/collate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import make_corpus
from transformers import Wav2Vec2Model

from speechxl.data.batching import FeatureConfig, load_datasets
from speechxl.data.vocab import Vocab
from speechxl.errors import DataError
from speechxl.inference.search import beam_search, greedy_search
from speechxl.models import build_model
from speechxl.models.xstnet import XSTNet, XSTNetConfig
from speechxl.modules.wav2vec2 import wav2vec2_config

TASKS = ("st", "asr", "mt", "triplet")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matrices: extra threads only add contention on a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("xstnet_corpus"), n_train=4, n_dev=1)


@pytest.fixture(scope="module")
def vocab(corpus) -> Vocab:
    return Vocab.load(corpus / "spm.model")


@pytest.fixture(scope="module")
def datasets(corpus, vocab):
    return load_datasets(corpus / "train.tsv", TASKS, vocab, features=FeatureConfig(features="wave"))


def batch_of(datasets, task: str, indices) -> dict:
    dataset = datasets[task]
    return dataset.collate([dataset[i] for i in indices])


def tiny_model(vocab, **overrides) -> XSTNet:
    torch.manual_seed(0)
    return build_model({"arch": "xstnet", "size": "tiny", **overrides}, vocab)


def scored_tokens(tokens: torch.Tensor, pad: int) -> int:
    """Non-pad tokens after the ignored language-tag prefix."""
    return int(tokens[:, 1:].ne(pad).sum())


def test_forward_every_task_and_triplet_is_the_sum(datasets, vocab):
    model = tiny_model(vocab).eval()
    rows = [0, 1, 2]
    outputs = {task: model(batch_of(datasets, task, rows)) for task in TASKS}
    st_batch = batch_of(datasets, "st", rows)
    asr_batch = batch_of(datasets, "asr", rows)
    assert outputs["st"]["sample_size"] == scored_tokens(st_batch["target"], vocab.pad)
    assert outputs["asr"]["sample_size"] == scored_tokens(asr_batch["transcript"], vocab.pad)
    assert outputs["mt"]["sample_size"] == outputs["st"]["sample_size"]
    for task in ("st", "asr", "mt"):
        out = outputs[task]
        assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0 and out["loss"].item() > 0
        assert out["logs"][f"{task}_ntokens"] == out["sample_size"] == out["logs"]["ntokens"]
    triplet = outputs["triplet"]
    assert triplet["sample_size"] == sum(outputs[t]["sample_size"] for t in ("st", "asr", "mt"))
    for task in ("st", "asr", "mt"):  # one triplet batch = the three single-task losses (eval: no dropout)
        assert triplet["logs"][f"{task}_loss"] == pytest.approx(outputs[task]["loss"].item(), rel=1e-5)
    assert triplet["loss"].item() == pytest.approx(
        sum(outputs[t]["loss"].item() for t in ("st", "asr", "mt")), rel=1e-5
    )


def test_loss_falls_when_overfitting_a_triplet_batch(datasets, vocab):
    model = tiny_model(vocab, dropout=0.0)
    batch = batch_of(datasets, "triplet", [0, 1])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        out = model(batch)
        (out["loss"] / out["sample_size"]).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item() / out["sample_size"])
    assert losses[-1] < 0.5 * losses[0]


def test_encoder_lengths_follow_the_conv_formulas(vocab):
    model = tiny_model(vocab).eval()
    lengths = torch.tensor([400, 1999, 5600, 16000])
    wave = torch.randn(len(lengths), int(lengths.max()))
    with torch.no_grad():
        enc = model.encode({"task": "st", "audio": wave, "audio_lengths": lengths})
    expected = []
    for samples in lengths.tolist():
        frames = samples
        for kernel, stride in zip([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]):  # wav2vec2 CNN, no padding
            frames = (frames - kernel) // stride + 1
        for _ in range(2):  # subsampler: k5 s2 p2
            frames = (frames - 1) // 2 + 1
        expected.append(frames + 1)  # + the <audio> tag
    assert expected[-1] == 14  # 1 s -> 49 wav2vec2 frames -> 25 -> 13, + tag
    assert (~enc["memory_padding_mask"]).sum(1).tolist() == expected
    assert enc["memory"].shape == (4, max(expected), model.config.dim)
    assert model.output_lengths(lengths).tolist() == expected


def test_padded_batch_equals_each_utterance_alone(datasets, vocab):
    """Audio path too: wav2vec2's conv-0 GroupNorm takes statistics over each utterance's real frames
    (speechxl.modules.wav2vec2), and the subsampler zeroes padded frames, so padding changes nothing."""
    model = tiny_model(vocab).eval()
    rows = [0, 1, 3]
    for task in ("st", "mt"):
        batch = batch_of(datasets, task, rows)
        with torch.no_grad():
            padded = model.encode(batch)
            logits = model.decoder(batch["prev_target"], padded["memory"], padded["memory_padding_mask"])
            for i, row in enumerate(rows):
                alone = batch_of(datasets, task, [row])
                single = model.encode(alone)
                n = single["memory"].size(1)
                assert (~padded["memory_padding_mask"][i]).sum() == n
                torch.testing.assert_close(padded["memory"][i, :n], single["memory"][0], atol=1e-4, rtol=1e-4)
                single_logits = model.decoder(alone["prev_target"], single["memory"], single["memory_padding_mask"])
                u = single_logits.size(1)
                torch.testing.assert_close(logits[i, :u], single_logits[0], atol=1e-4, rtol=1e-4)
    assert batch_of(datasets, "st", rows)["audio_lengths"].unique().numel() > 1  # really padded


def test_decode_step_with_cache_matches_teacher_forcing(datasets, vocab):
    model = tiny_model(vocab).eval()
    batch = batch_of(datasets, "st", [0, 2])
    with torch.no_grad():
        enc = model.encode(batch)
        forced = torch.log_softmax(model.decoder(batch["prev_target"], enc["memory"], enc["memory_padding_mask"]), -1)
        cache = None
        steps = 4
        for t in range(1, steps + 1):
            log_probs, cache = model.decode_step(batch["prev_target"][:, :t], enc, cache)
            torch.testing.assert_close(log_probs, forced[:, t - 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("task", ["st", "mt"])
def test_beam_search_on_audio_and_text_inputs(datasets, vocab, task):
    model = tiny_model(vocab).eval()
    batch = batch_of(datasets, task, [0, 1, 2])
    prefix = batch["target"][:, :1]
    beams = beam_search(model, batch, beam=3, max_len_b=12, prefix=prefix, nbest=2)
    greedy = greedy_search(model, batch, max_len_b=12, prefix=prefix)
    single_beam = beam_search(model, batch, beam=1, max_len_b=12, prefix=prefix)
    assert len(beams) == 3
    for hyps, tag, one, best_of_one in zip(beams, prefix[:, 0].tolist(), greedy, single_beam):
        assert len(hyps) == 2 and hyps[0].score >= hyps[1].score
        assert all(h.tokens[0] == tag and 1 <= len(h.tokens) <= 12 for h in hyps)
        assert best_of_one[0].tokens == one[0].tokens  # beam 1 is greedy search


def test_encoder_input_choice(datasets, vocab):
    model = tiny_model(vocab).eval()
    triplet = batch_of(datasets, "triplet", [0])
    assert model.encoder_input(triplet) == "audio"
    assert model.encoder_input(batch_of(datasets, "mt", [0])) == "text"
    with torch.no_grad():
        as_text = model.encode({**triplet, "encoder_input": "text"})
        mt = model.encode(batch_of(datasets, "mt", [0]))
    torch.testing.assert_close(as_text["memory"], mt["memory"])
    with pytest.raises(ValueError, match="raw 16 kHz waves"):
        model.encode({"task": "st", "audio": torch.zeros(1, 50, 80), "audio_lengths": torch.tensor([50])})


def test_w2v_path_loads_the_saved_wav2vec2(tmp_path, vocab):
    config = wav2vec2_config("tiny", conv_dim=[64] * 7, hidden_size=96, num_attention_heads=4, intermediate_size=192)
    torch.manual_seed(3)
    reference = Wav2Vec2Model(config).eval()
    reference.save_pretrained(tmp_path / "w2v")
    model = tiny_model(vocab, w2v_path=str(tmp_path / "w2v")).eval()
    wave = torch.randn(1, 8000)
    with torch.no_grad():
        ours, _ = model.acoustic(wave)
        theirs = reference(wave).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    # a checkpoint rebuilds the same architecture without the wav2vec2 directory
    rebuilt = build_model(model.checkpoint_config(), vocab).eval()
    assert rebuilt.config.w2v_path == ""
    rebuilt.load_state_dict(model.state_dict())
    batch = {"task": "st", "audio": wave, "audio_lengths": torch.tensor([8000])}
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.encode(batch)["memory"], model.encode(batch)["memory"])
    with pytest.raises(DataError, match="not an HF Wav2Vec2Model directory"):
        tiny_model(vocab, w2v_path=str(tmp_path / "missing"))


def test_rest_of_the_model_starts_the_same_with_a_loaded_or_random_wav2vec2(tmp_path, vocab):
    """A pre-trained vs random wav2vec2 ablation changes wav2vec2 only: same seed, same other weights."""
    config = {
        "arch": "xstnet",
        "size": "tiny",
        "w2v_overrides": dict(conv_dim=[32] * 7, hidden_size=32, num_attention_heads=2, intermediate_size=64),
    }

    def seeded(seed: int, **overrides) -> XSTNet:
        torch.manual_seed(seed)
        return build_model({**config, **overrides}, vocab)

    seeded(6).acoustic.model.save_pretrained(tmp_path / "w2v")  # another seed: a different wav2vec2 to load
    random_w2v, loaded = seeded(5), seeded(5, w2v_path=str(tmp_path / "w2v"))

    def weights(model):
        return {k: v for k, v in model.state_dict().items() if not k.startswith("acoustic.")}

    reference = weights(random_w2v)
    assert reference.keys() == weights(loaded).keys()
    for key, value in weights(loaded).items():
        torch.testing.assert_close(value, reference[key], atol=0, rtol=0, msg=key)
    assert not torch.equal(
        loaded.acoustic.model.feature_projection.projection.weight,
        random_w2v.acoustic.model.feature_projection.projection.weight,
    )


def test_acoustic_freeze_ends_after_its_updates(datasets, vocab):
    """train.freeze_acoustic_updates=2: the trainer's hook keeps wav2vec2 gradient-free for two updates."""
    from speechxl.train.stages import apply_acoustic_freeze

    model = tiny_model(vocab)
    assert model.acoustic_encoder() is model.acoustic
    batch = batch_of(datasets, "st", [0])
    acoustic_params = list(model.acoustic.parameters())
    for update, frozen in ((0, True), (1, True), (2, False)):
        apply_acoustic_freeze(model, 2, update)
        model(batch)["loss"].backward()
        assert all(p.grad is None for p in acoustic_params) == frozen
        assert model.subsampler.convs[0].weight.grad is not None
        model.zero_grad(set_to_none=True)


def test_parameter_names_and_config_errors(vocab):
    model = tiny_model(vocab)
    prefixes = {name.split(".")[0] for name, _ in model.named_parameters()}
    assert prefixes == {"acoustic", "subsampler", "encoder", "decoder"}
    assert model.embed_tokens is model.decoder.embed_tokens  # one embedding: encoder text input and output
    assert "decoder.embed_tokens.weight" in dict(model.named_parameters())
    base = XSTNetConfig.from_dict({})
    assert (
        base.dim,
        base.encoder_layers,
        base.decoder_layers,
        base.encoder_heads,
        base.encoder_ffn_dim,
        base.conv_channels,
        base.w2v_preset,
    ) == (512, 6, 6, 8, 2048, 1024, "base")
    with pytest.raises(DataError, match="unknown xstnet keys"):
        XSTNetConfig.from_dict({"size": "tiny", "dimension": 3})
    with pytest.raises(DataError, match="size"):
        XSTNetConfig.from_dict({"size": "huge"})

"""The fbank S2T model: loss, sizes, padding invariance, registry, learning."""

import math

import pytest
import torch

from speechxl.data.vocab import train_vocab
from speechxl.errors import DataError
from speechxl.losses import label_smoothed_nll_loss
from speechxl.models import build_model
from speechxl.models.s2t import S2TConfig, S2TTransformer

TINY = dict(
    input_dim=8,
    conv_channels=16,
    dim=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_heads=2,
    decoder_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
)
VOCAB, PAD, EOS = 30, 1, 2


def tiny_model(**overrides) -> S2TTransformer:
    torch.manual_seed(0)
    return S2TTransformer(S2TConfig.from_dict({**TINY, **overrides}), VOCAB, PAD, EOS)


def tiny_batch(lengths=(24, 17, 9), target_lengths=(5, 3, 4)):
    torch.manual_seed(1)
    frames = torch.randn(len(lengths), max(lengths), 8)
    for i, n in enumerate(lengths):
        frames[i, n:] = 0
    target = torch.full((len(lengths), max(target_lengths) + 1), PAD)
    for i, n in enumerate(target_lengths):
        target[i, :n] = torch.randint(3, VOCAB, (n,))
        target[i, n] = EOS
    prev = torch.full_like(target, PAD)
    prev[:, 0] = EOS
    for i, n in enumerate(target_lengths):
        prev[i, 1 : n + 1] = target[i, :n]
    return {
        "ids": [str(i) for i in range(len(lengths))],
        "task": "st",
        "audio": frames,
        "audio_lengths": torch.tensor(lengths),
        "target": target,
        "prev_target": prev,
        "target_lengths": torch.tensor(target_lengths) + 1,
        "ntokens": sum(target_lengths) + len(lengths),
        "prefix": target[:, :1],
    }  # the first target token plays the language tag: forced, no loss


def test_label_smoothed_ce_equals_the_formula_with_prefix_ignored():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    target = torch.tensor([[5, 3, 2, PAD], [6, 4, 4, 2]])
    eps = 0.1
    loss, nll, n = label_smoothed_nll_loss(logits, target, epsilon=eps, ignore_index=PAD, ignore_prefix_size=1)
    expected_loss = expected_nll = 0.0
    for b in range(2):
        for t in range(1, 4):  # position 0 is the language tag
            y = int(target[b, t])
            if y == PAD:
                continue
            lp = torch.log_softmax(logits[b, t], dim=-1)
            eps_i = eps / (7 - 1)
            expected_loss += float((1 - eps - eps_i) * -lp[y] + eps_i * -lp.sum())
            expected_nll += float(-lp[y])
    assert n == 5
    assert loss.item() == pytest.approx(expected_loss, rel=1e-5)
    assert nll.item() == pytest.approx(expected_nll, rel=1e-5)


def test_forward_returns_summed_loss_and_logs():
    model = tiny_model().eval()
    batch = tiny_batch()
    out = model(batch)
    assert out["sample_size"] == batch["ntokens"] - 3  # the three language tags carry no loss
    assert out["logs"]["st_loss"] == pytest.approx(out["loss"].item())
    assert out["logs"]["nsentences"] == 3
    assert out["loss"].item() > 0 and out["logs"]["nll_loss"] > 0


def test_sizes_follow_fairseq_and_bad_keys_are_reported():
    s = S2TConfig.from_dict({})
    assert (s.dim, s.encoder_layers, s.decoder_layers, s.encoder_heads, s.encoder_ffn_dim) == (256, 12, 6, 4, 2048)
    xs = S2TConfig.from_dict({"size": "xs"})
    assert (xs.encoder_layers, xs.decoder_layers, xs.encoder_ffn_dim, xs.dropout, xs.attention_dropout) == (
        6,
        3,
        1024,
        0.3,
        0.3,
    )
    m = S2TConfig.from_dict({"size": "m", "attention_dropout": 0.0})
    assert (m.dim, m.encoder_heads, m.dropout, m.attention_dropout) == (512, 8, 0.15, 0.0)
    with pytest.raises(DataError, match="encoder_layer"):
        S2TConfig.from_dict({"encoder_layer": 3})
    with pytest.raises(DataError, match="size"):
        S2TConfig.from_dict({"size": "huge"})


def test_padded_batch_equals_each_utterance_alone():
    model = tiny_model().eval()
    batch = tiny_batch()
    with torch.no_grad():
        enc = model.encode(batch)
        logits = model.decoder(batch["prev_target"], enc["memory"], enc["memory_padding_mask"])
        for i, n in enumerate(batch["audio_lengths"].tolist()):
            u = int(batch["target_lengths"][i])
            alone = model.encode({"audio": batch["audio"][i : i + 1, :n], "audio_lengths": torch.tensor([n])})
            valid = ~enc["memory_padding_mask"][i]
            torch.testing.assert_close(enc["memory"][i, valid], alone["memory"][0], atol=1e-5, rtol=1e-5)
            alone_logits = model.decoder(batch["prev_target"][i : i + 1, :u], alone["memory"], None)
            torch.testing.assert_close(logits[i, :u], alone_logits[0], atol=1e-5, rtol=1e-5)


def test_training_steps_reduce_the_loss():
    model = tiny_model(dropout=0.0).train()
    batch = tiny_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        out = model(batch)
        (out["loss"] / out["sample_size"]).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(out["loss"].item() / out["sample_size"])
    assert losses[-1] < 0.5 * losses[0]
    assert losses[0] == pytest.approx(math.log(VOCAB), rel=0.5)


def test_build_model_from_registry(tmp_path):
    vocab = train_vocab(["ein kleiner test satz", "a small test sentence"] * 20, tmp_path / "spm", 40, ["de"])
    model = build_model({"arch": "s2t", **TINY}, vocab)
    assert isinstance(model, S2TTransformer)
    assert model.decoder.embed_tokens.num_embeddings == len(vocab) and model.pad == vocab.pad
    with pytest.raises(DataError, match="unknown arch"):
        build_model({"arch": "nope"}, vocab)

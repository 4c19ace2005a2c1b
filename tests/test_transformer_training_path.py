"""The CPU training path of the Transformer (cheap dropout mask, eager attention, stacked projections, packed
rows) computes the same function as the eval path, and its dropout has the requested rate and expectation."""

import pytest
import torch
import torch.nn.functional as F

from speechxl.modules.transformer import (
    Dropout,
    RowPacking,
    TransformerDecoder,
    TransformerEncoder,
    _eager_attention,
    dropout_multiplier,
)

DIM, HEADS, FFN, VOCAB, PAD = 32, 4, 64, 40, 1


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_multiplier_has_rate_p_and_expectation_one(p):
    torch.manual_seed(0)
    like = torch.empty(1000, 1001)  # odd count: the last 64-bit draw is only partly used
    m = dropout_multiplier(like, p)
    assert m.shape == like.shape and m.dtype == like.dtype
    values = m.unique()
    assert values.numel() == 2 and values[0] == 0
    dropped = (m == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=3e-3)
    # the scale uses the realised keep rate (p to 1/65536), so the expectation is exactly one
    kept_rate = 1 - round(p * 65536) / 65536
    assert values[1].item() * kept_rate == pytest.approx(1.0, abs=1e-6)
    assert m.mean().item() == pytest.approx(1.0, abs=5e-3)
    torch.manual_seed(0)
    assert torch.equal(dropout_multiplier(like, p), m)  # reproducible from the seed
    assert torch.equal(dropout_multiplier(torch.empty(3, 5), 1.0), torch.zeros(3, 5))


def test_dropout_module_is_identity_in_eval_and_fuses_the_residual():
    drop = Dropout(0.25)
    x, residual = torch.randn(4, 64), torch.randn(4, 64)
    assert torch.equal(drop.eval()(x), x) and torch.equal(drop.add_to(residual, x), residual + x)
    torch.manual_seed(1)
    out = drop.train().add_to(residual, x)
    torch.manual_seed(1)
    torch.testing.assert_close(out, residual + x * dropout_multiplier(x, 0.25))
    assert ((out - residual).abs() < 1e-6).float().mean() == pytest.approx(0.25, abs=0.08)


@pytest.mark.parametrize("case", ["padding", "causal", "none"])
def test_eager_attention_equals_sdpa_values_and_gradients(case):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, HEADS, 6, 8, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :] if case == "padding" else None
    causal = case == "causal"
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    ours = _eager_attention(q * 8**-0.5, k, v, mask, causal, 0.0)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(ours)
    assert all(
        torch.allclose(a, b, atol=1e-5)
        for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(reference, (q, k, v), g))
    )


def test_eager_attention_drops_probabilities_with_the_dropout_multiplier():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, HEADS, 5, 8), torch.randn(2, HEADS, 7, 8), torch.randn(2, HEADS, 7, 8)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])[:, None, None, :]
    torch.manual_seed(3)
    ours = _eager_attention(q, k, v, mask, False, 0.4)
    probs = torch.softmax((q @ k.transpose(-1, -2)).masked_fill(~mask, float("-inf")), dim=-1)
    torch.manual_seed(3)
    torch.testing.assert_close(ours, (probs * dropout_multiplier(probs, 0.4)) @ v)


def test_row_packing_round_trips_real_rows_and_zeroes_padding():
    padding = torch.tensor([[False, False, True], [False, False, False], [False, True, True]])
    packing = RowPacking(padding)
    x = torch.randn(3, 3, 5)
    packed = packing.pack(x)
    assert torch.equal(packed, x[~padding])
    padded = packing.pad(packed)
    assert torch.equal(padded[~padding], x[~padding]) and padded[padding].abs().sum() == 0


@pytest.mark.parametrize("normalize_before", [True, False])
def test_training_path_computes_the_eval_function_and_gradient(normalize_before):
    """Dropout rates too small to drop anything (p < 2^-17) still select the training path: eager attention
    with pre-scaled queries, stacked q/k/v weights, packed encoder rows. It must equal the eval path
    (SDPA, separate projections), outputs and parameter gradients."""
    torch.manual_seed(0)
    tiny = 1e-7
    kw = dict(dropout=tiny, attention_dropout=tiny, activation_dropout=tiny, normalize_before=normalize_before)
    encoder = TransformerEncoder(2, DIM, HEADS, FFN, **kw)
    decoder = TransformerDecoder(VOCAB, PAD, 2, DIM, HEADS, FFN, **kw)
    x = torch.randn(3, 9, DIM)
    padding = torch.arange(9)[None, :] >= torch.tensor([9, 6, 2])[:, None]
    tokens = torch.randint(3, VOCAB, (3, 5))
    tokens[2, 3:] = PAD
    params = list(encoder.parameters()) + list(decoder.parameters())
    results = []
    for training in (True, False):
        encoder.train(training), decoder.train(training)
        memory = encoder(x, padding)
        logits = decoder(tokens, memory, padding)
        real = logits[tokens.ne(PAD)]
        grads = torch.autograd.grad(real.logsumexp(-1).sum(), params)
        results.append((memory[~padding], real, grads))
    (train_memory, train_logits, train_grads), (eval_memory, eval_logits, eval_grads) = results
    torch.testing.assert_close(train_memory, eval_memory, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(train_logits, eval_logits, atol=1e-5, rtol=1e-5)
    for a, b in zip(train_grads, eval_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_encoder_output_is_zero_at_padding():
    encoder = TransformerEncoder(2, DIM, HEADS, FFN, dropout=0.1, attention_dropout=0.1)
    padding = torch.tensor([[False] * 4, [False, False, True, True]])
    for training in (True, False):
        memory = encoder.train(training)(torch.randn(2, 4, DIM), padding)
        assert memory[padding].abs().sum() == 0 and memory[~padding].abs().sum() > 0

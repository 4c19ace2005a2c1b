"""Transformer blocks: incremental decoding equals teacher forcing, padding invariance, fairseq positions."""

import pytest
import torch
from transformers.models.speech_to_text.modeling_speech_to_text import Speech2TextSinusoidalPositionalEmbedding

from speechxl.modules.positions import SinusoidalPositions
from speechxl.modules.transformer import TransformerDecoder, TransformerEncoder

DIM, HEADS, FFN, VOCAB, PAD = 32, 4, 64, 40, 1


def make_stacks(normalize_before: bool):
    torch.manual_seed(0)
    kw = dict(dropout=0.1, attention_dropout=0.1, activation_dropout=0.1, normalize_before=normalize_before)
    encoder = TransformerEncoder(2, DIM, HEADS, FFN, **kw).eval()
    decoder = TransformerDecoder(VOCAB, PAD, 2, DIM, HEADS, FFN, **kw).eval()
    return encoder, decoder


@pytest.mark.parametrize("normalize_before", [True, False])
def test_incremental_decoding_equals_teacher_forcing(normalize_before):
    encoder, decoder = make_stacks(normalize_before)
    memory = encoder(torch.randn(2, 9, DIM), torch.tensor([[False] * 9, [False] * 6 + [True] * 3]))
    padding = torch.tensor([[False] * 9, [False] * 6 + [True] * 3])
    tokens = torch.randint(3, VOCAB, (2, 7))
    full = decoder(tokens, memory, padding)
    cache = None
    for t in range(1, 8):
        logits, cache = decoder.step(tokens[:, :t], memory, padding, cache)
        torch.testing.assert_close(logits, full[:, t - 1], atol=1e-5, rtol=1e-5)
    # a first call with several tokens (a forced prefix), then single steps
    logits, cache = decoder.step(tokens[:, :3], memory, padding, None)
    logits, cache = decoder.step(tokens[:, :4], memory, padding, cache)
    torch.testing.assert_close(logits, full[:, 3], atol=1e-5, rtol=1e-5)


def test_grouped_rows_share_memory_and_reorder():
    """k token rows per memory row (beams) give the same as copying the memory per row."""
    encoder, decoder = make_stacks(True)
    memory = encoder(torch.randn(2, 5, DIM), None)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    k = 3
    tokens = torch.randint(3, VOCAB, (2 * k, 4))
    expanded = decoder(tokens, memory.repeat_interleave(k, 0), padding.repeat_interleave(k, 0))
    _, cache = decoder.step(tokens[:, :3], memory, padding, None)
    # swap beams inside each utterance, then drop utterance 0: rows must follow
    order = torch.tensor([2, 0, 1, 4, 5, 3])
    cache = decoder.reorder_cache(cache, order)
    logits, _ = decoder.step(tokens[order], memory, padding, cache)
    torch.testing.assert_close(logits, expanded[order, 3], atol=1e-5, rtol=1e-5)
    shrink = torch.tensor([4, 3, 5])
    _, cache = decoder.step(tokens[:, :3], memory, padding, None)
    cache = decoder.reorder_cache(cache, shrink)
    logits, _ = decoder.step(tokens[shrink], memory[1:], padding[1:], cache)
    torch.testing.assert_close(logits, expanded[shrink, 3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("normalize_before", [True, False])
def test_padded_batch_equals_each_utterance_alone(normalize_before):
    encoder, decoder = make_stacks(normalize_before)
    lengths = [8, 5, 2]
    x = torch.randn(3, 8, DIM)
    padding = torch.arange(8)[None, :] >= torch.tensor(lengths)[:, None]
    memory = encoder(x, padding)
    tokens = torch.randint(3, VOCAB, (3, 6))
    tokens[2, 4:] = PAD  # right-padded target
    logits = decoder(tokens, memory, padding)
    for i, n in enumerate(lengths):
        alone = encoder(x[i : i + 1, :n], None)
        torch.testing.assert_close(memory[i, :n], alone[0], atol=1e-5, rtol=1e-5)
        u = 4 if i == 2 else 6
        alone_logits = decoder(tokens[i : i + 1, :u], alone, None)
        torch.testing.assert_close(logits[i, :u], alone_logits[0], atol=1e-5, rtol=1e-5)


def test_post_norm_has_no_final_norm_and_names_are_selectable():
    encoder, decoder = make_stacks(False)
    assert encoder.final_norm is None and decoder.final_norm is None
    names = {n for n, _ in make_stacks(True)[1].named_parameters()}
    for part in (
        "self_attn.q_proj.weight",
        "self_attn.out_proj.bias",
        "self_attn_norm.weight",
        "cross_attn.k_proj.weight",
        "cross_attn_norm.bias",
        "ffn.fc1.weight",
        "ffn.fc2.bias",
        "ffn_norm.weight",
    ):
        assert f"layers.0.{part}" in names
    assert "final_norm.weight" in names and "embed_tokens.weight" in names


def test_positions_match_fairseq_sinusoids():
    ours = SinusoidalPositions(DIM, padding_idx=PAD, initial_size=4)  # forces the table to grow
    reference = Speech2TextSinusoidalPositionalEmbedding(64, DIM, PAD)
    tokens = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, PAD, PAD, PAD]])
    torch.testing.assert_close(ours(tokens.eq(PAD)), reference(tokens))
    assert ours(tokens.eq(PAD))[1, 3:].abs().sum() == 0
    torch.testing.assert_close(ours(torch.zeros(1, 1, dtype=torch.bool), offset=4)[0, 0], reference(tokens[:1])[0, 4])


def test_layerdrop_skips_layers_only_in_training():
    torch.manual_seed(0)
    encoder = TransformerEncoder(4, DIM, HEADS, FFN, dropout=0.0, layerdrop=1.0)
    x = torch.randn(1, 3, DIM)
    assert torch.equal(encoder.train()(x, None), encoder.final_norm(x))
    assert not torch.allclose(encoder.eval()(x, None), encoder.final_norm(x))

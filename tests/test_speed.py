"""The speed paths compute the same function as the plain ones: the decoder's logits for chosen rows only
(real target tokens, packed rows), and the CPU-side parts of tools/gpu_check (FLOP counts, peak table, JSON)."""

import pytest
import torch

from speechxl.modules.transformer import TransformerDecoder

DIM, HEADS, FFN, VOCAB, PAD = 32, 4, 64, 40, 1


@pytest.mark.parametrize("normalize_before", [True, False])
def test_decoder_logits_for_chosen_rows_equal_the_full_logits_and_their_gradients(normalize_before):
    torch.manual_seed(0)
    decoder = TransformerDecoder(VOCAB, PAD, 2, DIM, HEADS, FFN, dropout=0.0, normalize_before=normalize_before)
    decoder.train()  # the training path (stacked projections, eager attention) with packed rows
    memory = torch.randn(3, 7, DIM)
    memory_padding = torch.tensor([[False] * 7, [False] * 4 + [True] * 3, [False] * 2 + [True] * 5])
    prev = torch.tensor([[2, 5, 9, 7, 4], [2, 6, 6, 11, PAD], [2, 8, PAD, PAD, PAD]])
    rows = prev.ne(PAD)
    rows[:, 0] = False  # e.g. a forced language tag that carries no loss

    full = decoder(prev, memory, memory_padding)
    chosen = decoder(prev, memory, memory_padding, rows=rows)
    assert chosen.shape == (int(rows.sum()), VOCAB)
    torch.testing.assert_close(chosen, full[rows], atol=1e-5, rtol=1e-5)

    weights = torch.randn_like(chosen)
    grads_full = torch.autograd.grad((full[rows] * weights).sum(), list(decoder.parameters()), allow_unused=True)
    grads_rows = torch.autograd.grad((chosen * weights).sum(), list(decoder.parameters()), allow_unused=True)
    for a, b in zip(grads_full, grads_rows):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)

    # no padding at all: the plain row selection
    dense = prev[:1]
    torch.testing.assert_close(
        decoder(dense, memory[:1], None, rows=dense.ne(PAD)), decoder(dense, memory[:1], None)[0], atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="padding"):
        decoder(prev, memory, memory_padding, rows=torch.ones_like(rows))

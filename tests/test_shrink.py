"""CTC-guided shrinking (speechxl.modules.shrink) against hand computations, and COSTT's front ends."""

from __future__ import annotations

import pytest
import torch

from speechxl.modules.shrink import ctc_shrink, shrink_segments
from speechxl.modules.subsampling import Conv2dSubsampler, StackSubsampler

B = 0  # blank


def _states(t: int, d: int = 3) -> torch.Tensor:
    return torch.arange(t * d, dtype=torch.float).view(1, t, d) + 1.0


@pytest.mark.parametrize(
    "labels, first, runs",
    [
        # runs and blanks: A A _ B B B _ -> A (frame 0), B (frame 3)
        ([5, 5, B, 7, 7, 7, B], [0, 3], [[0, 1], [3, 4, 5]]),
        # a label repeated across a blank is two tokens: A _ A -> frames 0 and 2
        ([5, B, 5], [0, 2], [[0], [2]]),
        # a change of label without a blank starts a run: A B A
        ([5, 7, 5, 5], [0, 1, 2], [[0], [1], [2, 3]]),
        # leading blanks, a run at the very end
        ([B, B, 9, 9], [2], [[2, 3]]),
    ],
)
def test_shrink_matches_hand_computation(labels, first, runs):
    t = len(labels)
    states = _states(t)
    lab = torch.tensor([labels])
    packed, lengths, mask = ctc_shrink(states, lab, torch.tensor([t]), blank=B, mode="first")
    assert lengths.tolist() == [len(first)] and not mask.any()
    assert torch.equal(packed[0], states[0, first])
    packed, lengths, _ = ctc_shrink(states, lab, torch.tensor([t]), blank=B, mode="average")
    assert lengths.tolist() == [len(runs)]
    expected = torch.stack([states[0, run].mean(0) for run in runs])
    assert torch.allclose(packed[0], expected)


@pytest.mark.parametrize("mode", ["first", "average"])
def test_all_blank_keeps_one_state_the_mean_of_the_frames(mode):
    states = _states(4)
    packed, lengths, mask = ctc_shrink(states, torch.zeros(1, 4, dtype=torch.long), torch.tensor([4]), B, mode)
    assert lengths.tolist() == [1] and packed.shape == (1, 1, 3) and not mask.any()
    assert torch.allclose(packed[0, 0], states[0].mean(0))


@pytest.mark.parametrize("mode", ["first", "average"])
def test_padded_batch_equals_each_utterance_alone(mode):
    torch.manual_seed(0)
    rows = [[5, 5, B, 7, 7, B, 5, 9], [B, 3, 3, B], [B, B, B], [4, 4, 4, 4, 4, 6]]
    t = max(map(len, rows))
    d = 4
    states = torch.randn(len(rows), t, d, requires_grad=True)
    # padding carries junk labels (non-blank, changing) that must be ignored
    labels = torch.tensor([r + [8, 9][: t - len(r)] + [1] * max(0, t - len(r) - 2) for r in rows])
    lengths = torch.tensor([len(r) for r in rows])
    packed, out_lengths, mask = ctc_shrink(states, labels, lengths, B, mode)
    assert out_lengths.tolist() == ([4, 1, 1, 2] if mode == "first" else [4, 1, 1, 2])
    assert mask.tolist() == [[False] * 4, [False] + [True] * 3, [False] + [True] * 3, [False] * 2 + [True] * 2]
    for i, row in enumerate(rows):
        alone, n, _ = ctc_shrink(
            states[i : i + 1, : len(row)], labels[i : i + 1, : len(row)], torch.tensor([len(row)]), B, mode
        )
        assert int(n) == out_lengths[i]
        assert torch.allclose(packed[i, : int(n)], alone[0])
        assert packed[i, int(n) :].abs().sum() == 0  # padding is zeros
    # gradients flow into exactly the frames that were kept (first) or averaged (average)
    packed.sum().backward()
    grad = states.grad.abs().sum(-1)
    assert grad[0].ne(0).tolist() == (
        [True, False, False, True, False, False, True, True]
        if mode == "first"
        else [True, True, False, True, True, False, True, True]
    )
    assert grad[2, :3].ne(0).all()  # all blank: the mean of every frame
    assert grad[:, :].masked_select(torch.arange(t)[None] >= lengths[:, None]).eq(0).all()


def test_segments_reject_unknown_mode():
    with pytest.raises(ValueError, match="shrink mode"):
        shrink_segments(torch.zeros(1, 2, dtype=torch.long), torch.tensor([2]), B, "last")


@pytest.mark.parametrize("front", ["stack", "conv2d"])
def test_front_ends_padded_batch_equals_alone(front):
    torch.manual_seed(0)
    module = StackSubsampler(80, 16) if front == "stack" else Conv2dSubsampler(80, 4, 16)
    lengths = torch.tensor([23, 10, 7])
    x = torch.randn(3, 23, 80)
    out, out_lengths = module(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, m = module(x[i : i + 1, :n], torch.tensor([n]))
        assert int(m) == int(out_lengths[i]) == alone.size(1)
        assert torch.allclose(out[i, : int(m)], alone[0], atol=1e-6)


def test_stack_front_end_is_480_dims_every_third_frame():
    module = StackSubsampler(80, 8)
    assert module.proj.in_features == 480
    x = torch.randn(1, 10, 80)
    with torch.no_grad():
        module.proj.weight.zero_()
        module.proj.weight[0, 80 * 5] = 1.0  # reads bin 0 of the 5th right-context frame
        module.proj.bias.zero_()
    out, lengths = module(x, torch.tensor([10]))
    assert lengths.tolist() == [4]  # frames 0, 3, 6, 9
    assert torch.allclose(out[0, :, 0], torch.stack([x[0, 5, 0], x[0, 8, 0], torch.tensor(0.0), torch.tensor(0.0)]))

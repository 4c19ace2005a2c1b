"""The S2T model's ASR task and auxiliary CTC (joint CTC/attention training)."""

import pytest
import torch
import torch.nn.functional as F
from test_s2t import EOS, PAD, VOCAB, tiny_batch, tiny_model

TAG = 3  # stands for <en> in these tests


def with_transcript(batch, lengths=(6, 4, 2)):
    """Add `[<en>] + tokens + [</s>]` transcripts (and their prev) to a tiny batch."""
    torch.manual_seed(2)
    width = max(lengths) + 2
    transcript = torch.full((len(lengths), width), PAD)
    for i, n in enumerate(lengths):
        transcript[i, 0] = TAG
        transcript[i, 1 : n + 1] = torch.randint(4, VOCAB, (n,))
        transcript[i, n + 1] = EOS
    prev = torch.full_like(transcript, PAD)
    prev[:, 0] = EOS
    for i, n in enumerate(lengths):
        prev[i, 1 : n + 2] = transcript[i, : n + 1]
    return {**batch, "transcript": transcript, "prev_transcript": prev, "transcript_lengths": torch.tensor(lengths) + 2}


def test_without_ctc_weight_there_is_no_ctc_head_and_no_ctc_loss():
    model = tiny_model()
    assert model.ctc_head is None and "ctc_loss" not in model(with_transcript(tiny_batch()))["logs"]


def test_ctc_is_added_with_its_weight_on_the_untagged_transcript():
    batch = with_transcript(tiny_batch())
    plain, joint = tiny_model().eval(), tiny_model(ctc_weight=0.3).eval()
    joint.load_state_dict({**plain.state_dict(), **{k: v for k, v in joint.state_dict().items() if "ctc" in k}})
    with torch.no_grad():
        ce = plain(batch)["loss"]
        out = joint(batch)
        # the same CTC computed by hand: tag and </s> dropped, frames after the subsampler
        enc = joint.encode(batch)
        frames = (~enc["memory_padding_mask"]).sum(1)
        lprobs = F.log_softmax(joint.ctc_head(enc["memory"]), -1).transpose(0, 1)
        targets = [batch["transcript"][i, 1 : n - 1] for i, n in enumerate(batch["transcript_lengths"].tolist())]
        expected = sum(
            F.ctc_loss(
                lprobs[:, i : i + 1], t[None], frames[i : i + 1], torch.tensor([len(t)]), blank=0, reduction="sum"
            )
            for i, t in enumerate(targets)
        )
    assert out["logs"]["ctc_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert float(out["loss"]) == pytest.approx(float(ce) + 0.3 * float(expected), rel=1e-5)
    assert out["sample_size"] == plain(batch)["sample_size"]


def test_asr_task_predicts_the_transcript():
    model = tiny_model().eval()
    batch = with_transcript(tiny_batch())
    asr = {**batch, "task": "asr", "target": None, "prev_target": None}
    swapped = {**batch, "target": batch["transcript"], "prev_target": batch["prev_transcript"]}
    out = model(asr)
    assert "asr_loss" in out["logs"]
    assert out["loss"].item() == pytest.approx(model(swapped)["loss"].item(), rel=1e-6)


def test_joint_ctc_training_lowers_the_ctc_loss():
    model = tiny_model(ctc_weight=0.5, dropout=0.0)
    batch = with_transcript(tiny_batch(lengths=(40, 36, 30)))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(batch)
        losses.append(out["logs"]["ctc_loss"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert losses[-1] < 0.7 * losses[0]

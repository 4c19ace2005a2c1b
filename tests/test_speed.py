"""The speed paths compute the same function as the plain ones: the decoder's logits for chosen rows only
(real target tokens, packed rows), and the CPU-side parts of tools/gpu_check (FLOP counts, peak table, JSON)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny_run import make_corpus, tiny_config
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from speechxl.config import TrainConfig, config_from_dict
from speechxl.modules.transformer import FeedForward, TransformerDecoder, dropout_multiplier
from speechxl.train.distributed import DistEnv
from speechxl.train.logs import read_log
from speechxl.train.loop import compile_for_training, train
from speechxl.train.optim import build_optimizer

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


def test_feed_forward_relu_folded_into_dropout_equals_relu_then_dropout():
    torch.manual_seed(0)
    ffn = FeedForward(DIM, FFN, "relu", activation_dropout=0.3).train()
    x = torch.randn(9, DIM, requires_grad=True)
    torch.manual_seed(5)
    fused = ffn(x)
    torch.manual_seed(5)
    h = ffn.fc1(x)
    reference = ffn.fc2(torch.relu(h) * dropout_multiplier(h, 0.3))  # the same draw
    torch.testing.assert_close(fused, reference)
    g = torch.randn_like(fused)
    inputs = [x, *ffn.parameters()]
    for a, b in zip(torch.autograd.grad(fused, inputs, g), torch.autograd.grad(reference, inputs, g)):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- gpu_check


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arch, overrides, frames",
    [
        ("s2t", dict(size="xs", dim=32, encoder_ffn_dim=64, decoder_ffn_dim=48, conv_channels=24), 37),
        ("xstnet", dict(size="tiny"), 4000),
    ],
)
def test_model_flops_from_the_config_equal_torch_flop_counter(arch, overrides, frames):
    """The formula counts what torch's own FLOP counter sees in a forward pass (equal lengths, no padding)."""
    gpu_check = _gpu_check()
    config = gpu_check.model_config(arch, overrides.pop("size"), overrides)
    torch.manual_seed(0)
    model = gpu_check.build(arch, config, VOCAB).eval()
    batch = gpu_check.synthetic_batch(arch, 2, frames, 6, VOCAB, "cpu")
    # SDPA's math kernel is made of matmuls the counter sees (it has no formula for the CPU flash kernel)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(batch)
    counted = gpu_check.model_flops(arch, config, batch=2, frames=frames, tokens=6, vocab=VOCAB)
    assert counted["forward_flops"] == counter.get_total_flops()
    assert counted["train_flops"] == 3 * counted["forward_flops"]


def test_bf16_peak_table_picks_the_longest_matching_name():
    gpu_check = _gpu_check()
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.bf16_peak_tflops("NVIDIA A10G") == 70.0 and gpu_check.bf16_peak_tflops("NVIDIA A10") == 125.0
    assert gpu_check.bf16_peak_tflops("NVIDIA L40S") == 362.0 and gpu_check.bf16_peak_tflops("NVIDIA L4") == 121.0
    assert gpu_check.bf16_peak_tflops("Tesla T4") is None  # no bf16 tensor cores: MFU is reported as null


def test_gpu_check_prints_one_json_line_per_figure_and_refuses_without_cuda(capsys):
    gpu_check = _gpu_check()
    assert gpu_check.main(["flops", "--arch", "s2t", "--size", "m"]) == 0
    assert gpu_check.main(["peak", "NVIDIA H200"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    flops, peak = (json.loads(line) for line in lines)
    assert flops["check"] == "flops" and flops["batch"] == 40 and flops["frames"] == 1000
    assert flops["train_flops"] == 3 * flops["forward_flops"] > 0 and flops["encoder_positions"] == 250
    assert peak == {"check": "peak", "device": "NVIDIA H200", "peak_bf16_tflops": 989.4}
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            gpu_check.main(["train", "--arch", "s2t", "--size", "xs", "--steps", "1"])


# ---------------------------------------------------------------------------------------------- GPU flags on CPU


def test_train_compile_is_refused_on_cpu_and_adamw_is_fused_only_on_cuda():
    model = torch.nn.Linear(3, 2)
    cpu = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert compile_for_training(model, TrainConfig(), cpu) is model
    with pytest.raises(RuntimeError, match="train.compile=true needs a CUDA device"):
        compile_for_training(model, TrainConfig(compile=True), cpu)
    assert not build_optimizer(model.parameters(), TrainConfig()).defaults["fused"]


def test_w2v_checkpointing_recomputes_the_same_loss_and_gradients():
    gpu_check = _gpu_check()
    results = []
    for checkpointing in (False, True):
        config = gpu_check.model_config("xstnet", "tiny", {"w2v_checkpointing": checkpointing})
        torch.manual_seed(0)
        model = gpu_check.build("xstnet", config, VOCAB).train()
        assert model.acoustic.model.is_activation_checkpointing == checkpointing
        batch = gpu_check.synthetic_batch("xstnet", 2, 4000, 6, VOCAB, "cpu")
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the RNG state in backward
        out = model(batch)
        out["loss"].backward()
        results.append((out["loss"].detach(), [p.grad for p in model.acoustic.parameters() if p.grad is not None]))
    (loss, grads), (loss_ckpt, grads_ckpt) = results
    torch.testing.assert_close(loss_ckpt, loss)
    assert len(grads) == len(grads_ckpt) > 0
    for a, b in zip(grads, grads_ckpt):
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------------------------- data workers


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_training_with_data_workers_resumes_exactly_and_matches_the_in_process_loader(tmp_path, tiny_corpus):
    """data.num_workers=2: a run stopped after update 4 and resumed logs what one uninterrupted run without
    workers logs (same batches, same order, same losses): prefetching never moves the resume point."""

    def run(run_dir, max_update, workers):
        config = tiny_config(tiny_corpus, run_dir, max_update=max_update, save_every=2, validate_every=0)
        config["data"]["num_workers"] = workers
        train(config_from_dict(config))
        return [{k: v for k, v in r.items() if k != "time"} for r in read_log(run_dir) if r["type"] == "train"]

    reference = run(tmp_path / "ref", 8, 0)
    run(tmp_path / "workers", 4, 2)
    resumed = run(tmp_path / "workers", 8, 2)
    assert [r["update"] for r in resumed] == list(range(1, 9))
    assert resumed == reference

"""Wav2Vec2Encoder: frame lengths, padding invariance, normalisation, freezing, feature_grad_mult."""

from __future__ import annotations

import pytest
import torch

from speechxl.modules.wav2vec2 import Wav2Vec2Encoder, conv_output_lengths, wav2vec2_config

NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}


def tiny(large_style: bool = False, **options) -> Wav2Vec2Encoder:
    torch.manual_seed(0)
    extra = (
        {"feat_extract_norm": "layer", "conv_bias": True, "do_stable_layer_norm": True, "do_normalize": True}
        if large_style
        else {}
    )
    return Wav2Vec2Encoder(wav2vec2_config("tiny", **NO_DROPOUT, **extra), **options)


def test_presets_follow_the_paper():
    base, large = wav2vec2_config("base"), wav2vec2_config("large")
    assert (base.feat_extract_norm, base.conv_bias, base.do_stable_layer_norm, base.hidden_size) == (
        "group",
        False,
        False,
        768,
    )
    assert (large.feat_extract_norm, large.conv_bias, large.do_stable_layer_norm, large.num_hidden_layers) == (
        "layer",
        True,
        True,
        24,
    )
    assert base.mask_time_prob == 0.0 and large.do_normalize and not base.do_normalize


@pytest.mark.parametrize("samples", [400, 401, 8000, 16000, 23457])
def test_output_lengths_match_the_cnn(samples):
    encoder = tiny().eval()
    states, mask = encoder(torch.randn(1, samples))
    assert states.shape[1] == int(encoder.output_lengths(torch.tensor(samples))) and not mask.any()
    assert int(conv_output_lengths(torch.tensor(16000), [10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2])) == 49


@pytest.mark.parametrize("large_style", [False, True])
def test_padding_does_not_change_the_frames_of_an_utterance(large_style):
    encoder = tiny(large_style).eval()
    short, long = torch.randn(1, 6000), torch.randn(1, 16000)
    batch = torch.cat([long, torch.nn.functional.pad(short, (0, 10000), value=0.7)])  # junk in the padding
    padding = torch.zeros(2, 16000, dtype=torch.bool)
    padding[1, 6000:] = True
    states, frame_padding = encoder(batch, padding)
    alone, _ = encoder(short)
    n = alone.shape[1]
    assert frame_padding[1].tolist() == [False] * n + [True] * (states.shape[1] - n)
    torch.testing.assert_close(states[1, :n], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(states[0], encoder(long)[0][0], atol=1e-5, rtol=1e-4)


def test_group_norm_model_matches_hf_on_a_single_utterance():
    encoder = tiny().eval()
    wave = torch.randn(1, 12000)
    torch.testing.assert_close(encoder(wave)[0], encoder.model(wave).last_hidden_state, atol=1e-5, rtol=1e-4)


def test_waveform_normalisation_follows_the_config():
    wave = torch.randn(1, 8000)
    normalised = tiny(large_style=True).eval()
    torch.testing.assert_close(normalised(wave * 5 + 0.3)[0], normalised(wave)[0], atol=1e-4, rtol=1e-4)
    assert not tiny().normalize  # base style: raw waveform
    raw = tiny(large_style=True, normalize=False).eval()  # conv bias + layer norm: not scale invariant
    assert not torch.allclose(raw(wave * 5 + 0.3)[0], raw(wave)[0], atol=1e-3)


def test_freeze_entirely():
    encoder = tiny(freeze=True)
    states, _ = encoder(torch.randn(1, 4000))
    assert not states.requires_grad and not any(p.requires_grad for p in encoder.parameters())


def test_freeze_for_the_first_updates():
    encoder = tiny(freeze_updates=3)
    encoder.set_update(2)
    assert not encoder(torch.randn(1, 4000))[0].requires_grad
    encoder.set_update(3)
    states, _ = encoder(torch.randn(1, 4000))
    states.sum().backward()
    assert encoder.model.feature_extractor.conv_layers[0].conv.weight.grad is not None


def test_feature_grad_mult_scales_only_the_cnn_gradient():
    wave = torch.randn(1, 4000)
    grads = {}
    for mult in (1.0, 0.1):
        encoder = tiny(feature_grad_mult=mult).eval()
        encoder(wave)[0].pow(2).sum().backward()
        grads[mult] = (
            encoder.model.feature_extractor.conv_layers[0].conv.weight.grad,
            encoder.model.encoder.layers[0].feed_forward.output_dense.weight.grad,
        )
    torch.testing.assert_close(grads[0.1][0], grads[1.0][0] * 0.1, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])
    encoder = tiny(feature_grad_mult=0.0)
    encoder(wave)[0].sum().backward()
    assert encoder.model.feature_extractor.conv_layers[0].conv.weight.grad is None


def test_no_time_masking_unless_configured_and_pretrained_round_trip(tmp_path):
    encoder = tiny()
    assert not hasattr(encoder.model, "masked_spec_embed")
    encoder.train()  # dropout is 0 and masking off: training forward is deterministic
    wave = torch.randn(1, 8000)
    torch.testing.assert_close(encoder(wave)[0], encoder(wave)[0])
    encoder.model.save_pretrained(tmp_path)
    loaded = Wav2Vec2Encoder.from_pretrained(tmp_path, layerdrop=0.05).eval()
    assert loaded.config.layerdrop == 0.05 and loaded.config.mask_time_prob == 0.0
    torch.testing.assert_close(loaded(wave)[0], encoder.eval()(wave)[0])
    masked = Wav2Vec2Encoder.from_pretrained(tmp_path, mask_time_prob=0.5, mask_time_length=2).train()
    assert not torch.allclose(masked(wave)[0], loaded(wave)[0])

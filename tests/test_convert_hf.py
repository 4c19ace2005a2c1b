"""HF Speech2Text -> speechxl: weights, logits and search outputs match HF exactly."""

import json

import pytest
import sentencepiece as spm
import torch
from transformers import Speech2TextConfig, Speech2TextForConditionalGeneration

from speechxl.cli import main
from speechxl.convert.hf_generation import hf_generate_kwargs, hf_sequences_to_tokens
from speechxl.convert.hf_speech2text import convert_state_dict
from speechxl.errors import CheckpointError
from speechxl.inference.search import beam_search, greedy_search
from speechxl.models import load_model

TEXT = ["the cat sits on the mat", "a dog runs in the park", "ein hund läuft im park", "die katze sitzt"] * 10
CONFIGS = {
    "relu-2enc-1dec": dict(
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=48,
        conv_channels=32,
        input_feat_per_channel=8,
        activation_function="relu",
    ),
    "gelu-1enc-2dec-3conv": dict(
        d_model=24,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=3,
        encoder_ffn_dim=40,
        decoder_ffn_dim=40,
        conv_channels=16,
        num_conv_layers=3,
        conv_kernel_sizes=[3, 5, 3],
        input_feat_per_channel=6,
        activation_function="gelu",
    ),
}


def write_hf_checkpoint(directory, name):
    """A randomly initialised HF Speech2Text model with a SentencePiece tokenizer trained here."""
    directory.mkdir()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT),
        model_prefix=str(directory / "sp"),
        vocab_size=30,
        bos_id=0,
        pad_id=1,
        eos_id=2,
        unk_id=3,
        minloglevel=2,
    )
    (directory / "sp.model").rename(directory / "sentencepiece.bpe.model")
    processor = spm.SentencePieceProcessor(model_file=str(directory / "sentencepiece.bpe.model"))
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    (directory / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    torch.manual_seed(0)
    config = Speech2TextConfig(
        vocab_size=len(pieces), max_source_positions=300, max_target_positions=64, **CONFIGS[name]
    )
    hf = Speech2TextForConditionalGeneration(config).eval()
    with torch.no_grad():
        # unit-scale weights spread the output distribution so that search decisions are clear-cut, and a
        # nudge towards </s> makes hypotheses end at different lengths
        for parameter in hf.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5)
        hf.model.decoder.embed_tokens.weight.normal_(0.0, 1.0)
        hf.model.decoder.embed_tokens.weight[2] += 0.5 * hf.model.decoder.layer_norm.bias.normal_(0.0, 1.0)
    hf.save_pretrained(directory)
    return hf, pieces


def padded_features(dim):
    torch.manual_seed(2)
    lengths = torch.tensor([40, 27, 13])
    mask = (torch.arange(40)[None, :] < lengths[:, None]).long()
    return torch.randn(3, 40, dim) * mask[..., None], lengths, mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_converted_model_matches_hf(tmp_path, name):
    hf, pieces = write_hf_checkpoint(tmp_path / "hf", name)
    main(["convert", "hf-speech2text", str(tmp_path / "hf"), str(tmp_path / "ours")])
    model, vocab, config = load_model(tmp_path / "ours")
    assert config["model"]["arch"] == "s2t" and not config["model"]["mask_conv_padding"]
    assert len(vocab) == len(pieces) and vocab.piece(5) == pieces[5] and (vocab.pad, vocab.eos) == (1, 2)

    features, lengths, mask = padded_features(CONFIGS[name]["input_feat_per_channel"])
    batch = {"audio": features, "audio_lengths": lengths}
    prev = torch.tensor([[2, 5, 9, 7, 4], [2, 6, 6, 11, 1], [2, 8, 1, 1, 1]])
    with torch.no_grad():
        reference = hf(input_features=features, attention_mask=mask, decoder_input_ids=prev).logits
        enc = model.encode(batch)
        ours = model.decoder(prev, enc["memory"], enc["memory_padding_mask"])
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)

    # greedy, beam 5 (best and 3-best), with and without a forced language-tag prefix
    prefix = torch.tensor([[7], [8], [9]])
    lengths_seen = set()
    for beam, lenpen, tag, nbest in ((1, 1.0, None, 1), (5, 1.0, None, 1), (5, 0.7, prefix, 3)):
        kwargs = hf_generate_kwargs(eos=2, pad=1, beam=beam, lenpen=lenpen, max_len=12, prefix=tag, nbest=nbest)
        out = hf.generate(
            input_features=features, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **kwargs
        )
        if beam == 1:
            hyps = greedy_search(model, batch, max_len_b=12, prefix=tag)
        else:
            hyps = beam_search(model, batch, beam=beam, lenpen=lenpen, max_len_b=12, prefix=tag, nbest=nbest)
        assert [h.tokens for nb in hyps for h in nb] == hf_sequences_to_tokens(out.sequences, 2)
        lengths_seen.update(len(h.tokens) for nb in hyps for h in nb)
        if beam > 1:
            torch.testing.assert_close(
                torch.tensor([h.score for nb in hyps for h in nb]), out.sequences_scores, atol=1e-4, rtol=0
            )
    assert len(lengths_seen) > 1  # outputs end at different places: </s> decisions were compared, not only max length


def test_bad_inputs_are_reported(tmp_path):
    hf, _ = write_hf_checkpoint(tmp_path / "hf", "relu-2enc-1dec")
    (tmp_path / "hf" / "vocab.json").unlink()
    with pytest.raises(SystemExit, match="vocab.json is missing"):  # the CLI prints one line, no traceback
        main(["convert", "hf-speech2text", str(tmp_path / "hf"), str(tmp_path / "ours")])
    assert not (tmp_path / "ours").exists()
    state = dict(hf.state_dict())
    state["model.encoder.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="model.encoder.extra.weight"):
        convert_state_dict(state)
    state.pop("model.encoder.extra.weight")
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="tied"):
        convert_state_dict(state)


def test_a_tagless_bilingual_model_translates_audio_files_and_manifests(tmp_path):
    """fairseq's bilingual MuST-C models have no language tags: the converted checkpoint says it forces none,
    and `translate` works on it unchanged, from audio files and from a manifest, without a forced tag."""
    import soundfile as sf

    from speechxl.data.dataset import FeatureConfig, SpeechTextDataset
    from speechxl.data.manifest import write_manifest

    CONFIGS["fbank80"] = dict(CONFIGS["relu-2enc-1dec"], input_feat_per_channel=80)
    try:
        _, pieces = write_hf_checkpoint(tmp_path / "hf", "fbank80")
    finally:
        del CONFIGS["fbank80"]
    assert not any(p.startswith("<lang:") or p in ("<de>", "<en>") for p in pieces)
    main(["convert", "hf-speech2text", str(tmp_path / "hf"), str(tmp_path / "ours")])
    model, vocab, config = load_model(tmp_path / "ours")
    assert config["data"]["prepend_lang_tag"] is False
    wavs = []
    for i, seconds in enumerate((0.6, 0.9)):
        wavs.append(tmp_path / f"a{i}.wav")
        sf.write(
            wavs[-1], 0.1 * torch.randn(int(16000 * seconds), generator=torch.Generator().manual_seed(i)).numpy(), 16000
        )
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "ours"),
            "--audio",
            *map(str, wavs),
            "--out",
            str(tmp_path / "audio"),
            "--max-len-b",
            "10",
        ]
    )
    rows = [
        dict(
            id=f"u{i}",
            audio=str(w),
            n_frames=str(sf.info(w).frames),
            tgt_text="das ist gut",
            speaker="s",
            src_text="this is good",
            src_lang="en",
            tgt_lang="de",
        )
        for i, w in enumerate(wavs)
    ]
    write_manifest(tmp_path / "test.tsv", rows)
    main(
        [
            "translate",
            "--checkpoint",
            str(tmp_path / "ours"),
            "--manifest",
            str(tmp_path / "test.tsv"),
            "--out",
            str(tmp_path / "manifest"),
            "--max-len-b",
            "10",
        ]
    )
    from_audio = (tmp_path / "audio" / "hyp.txt").read_text().splitlines()
    assert from_audio == (tmp_path / "manifest" / "hyp.txt").read_text().splitlines() and len(from_audio) == 2
    # what beam search gives each utterance alone with no prefix forced
    dataset = SpeechTextDataset(rows, "st", vocab, features=FeatureConfig(), prepend_lang_tag=False, decoding=True)
    for i in range(2):
        batch = dataset.collate([dataset[i]])
        assert batch["prefix"] is None
        best = beam_search(model, batch, beam=5, max_len_b=10)[0][0]
        assert from_audio[i] == vocab.decode(best.tokens)

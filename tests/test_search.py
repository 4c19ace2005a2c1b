"""Beam and greedy search: exactness against brute force, beam 1 = greedy, n-best, prefix, max length."""

import itertools
import math

import torch

from speechxl.inference.search import LogitProcessor, beam_search, greedy_search
from speechxl.models.base import SpeechModel
from speechxl.models.s2t import S2TConfig, S2TTransformer

PAD, EOS = 1, 2


class BigramModel(SpeechModel):
    """A real (tiny) model implementing the search protocol: the next token depends on the last token
    and on the utterance; small enough to enumerate every output."""

    eos, pad = EOS, PAD

    def __init__(self, vocab: int, batch: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.table = torch.randn(batch, vocab, vocab, generator=generator) * 2

    def encode(self, batch):
        return {"utterance": torch.arange(len(batch["audio_lengths"]))}

    def reorder_encoder_out(self, enc, order):
        return {"utterance": enc["utterance"].index_select(0, order)}

    def decode_step(self, tokens, enc, cache):
        rows = enc["utterance"].repeat_interleave(tokens.size(0) // enc["utterance"].size(0))
        return torch.log_softmax(self.table[rows, tokens[:, -1]], dim=-1), cache

    def reorder_cache(self, cache, order):
        return cache

    def sequence_logprob(self, utterance: int, tokens: list[int]) -> float:
        lp, previous = 0.0, EOS
        for token in tokens:
            lp += float(torch.log_softmax(self.table[utterance, previous], -1)[token])
            previous = token
        return lp


def brute_force_best(model, utterance, vocab, max_len, lenpen, prefix=(), allowed=lambda tokens: True):
    best = (-math.inf, None)
    for length in range(1, max_len + 1):
        for body in itertools.product([t for t in range(vocab) if t not in (PAD, EOS)], repeat=length - len(prefix)):
            tokens = list(prefix) + list(body)
            if not allowed(tokens):
                continue
            score = model.sequence_logprob(utterance, tokens + [EOS]) / (length + 1) ** lenpen
            best = max(best, (score, tokens))
    return best


def test_large_beam_finds_the_exact_best_and_nbest_is_ordered():
    vocab, max_len = 5, 4
    model = BigramModel(vocab, batch=2)
    batch = {"audio_lengths": torch.tensor([7, 3])}
    for lenpen in (0.0, 1.0):
        hyps = beam_search(model, batch, beam=150, lenpen=lenpen, max_len_b=max_len, nbest=5)
        for utterance, nbest in enumerate(hyps):
            score, tokens = brute_force_best(model, utterance, vocab, max_len, lenpen)
            assert nbest[0].tokens == tokens
            assert math.isclose(nbest[0].score, score, rel_tol=1e-5)
            assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
            for h in nbest:  # each score is the length-normalised log-prob of its tokens + </s>
                expected = model.sequence_logprob(utterance, h.tokens + [EOS]) / (len(h.tokens) + 1) ** lenpen
                assert math.isclose(h.score, expected, rel_tol=1e-5)


def test_forced_prefix_is_honoured_and_scored():
    vocab = 5
    model = BigramModel(vocab, batch=2, seed=3)
    batch = {"audio_lengths": torch.tensor([4, 4])}
    prefix = torch.tensor([[4], [3]])
    hyps = beam_search(model, batch, beam=150, lenpen=1.0, max_len_b=4, prefix=prefix, nbest=3)
    for utterance, nbest in enumerate(hyps):
        assert all(h.tokens[0] == int(prefix[utterance, 0]) for h in nbest)
        score, tokens = brute_force_best(model, utterance, vocab, 4, 1.0, prefix=[int(prefix[utterance, 0])])
        assert nbest[0].tokens == tokens and math.isclose(nbest[0].score, score, rel_tol=1e-5)
    greedy = greedy_search(model, batch, max_len_b=4, prefix=prefix)
    assert [g[0].tokens[0] for g in greedy] == [4, 3]


class NoEndBefore(LogitProcessor):
    """A model's own constraint, like COSTT's "no </s> before <ast>": no </s> until `token` was written."""

    def __init__(self, token: int):
        self.token = token

    def __call__(self, lp, s):
        lp[~s.tokens.eq(self.token).any(dim=1), EOS] = float("-inf")
        return lp


class MustSayThree(BigramModel):
    def logit_processors(self, batch):
        return [NoEndBefore(3)]


def test_a_models_own_logit_processor_constrains_the_search():
    vocab, max_len = 5, 4
    model = MustSayThree(vocab, batch=2, seed=10)
    batch = {"audio_lengths": torch.tensor([7, 3])}
    plain = beam_search(BigramModel(vocab, batch=2, seed=10), batch, beam=150, max_len_b=max_len)
    hyps = beam_search(model, batch, beam=150, max_len_b=max_len, nbest=3)
    for utterance, nbest in enumerate(hyps):
        # </s> only after a 3, except at the length limit, where </s> is the only choice left
        score, tokens = brute_force_best(
            model, utterance, vocab, max_len, 1.0, allowed=lambda t: 3 in t or len(t) == max_len
        )
        assert nbest[0].tokens == tokens and math.isclose(nbest[0].score, score, rel_tol=1e-5)
        assert all(3 in h.tokens or len(h.tokens) == max_len for h in nbest)
    assert [h[0].tokens for h in plain] != [h[0].tokens for h in hyps]  # the constraint changed the outcome


def tiny_s2t():
    torch.manual_seed(0)
    config = S2TConfig.from_dict(
        dict(
            input_dim=8,
            conv_channels=16,
            dim=16,
            encoder_layers=1,
            decoder_layers=2,
            encoder_heads=2,
            decoder_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
        )
    )
    model = S2TTransformer(config, 40, PAD, EOS).eval()
    with torch.no_grad():  # a larger output scale makes outputs varied (and </s> likely) for a random model
        model.decoder.embed_tokens.weight.mul_(8)
    frames = torch.randn(3, 30, 8)
    frames[1, 21:] = 0
    frames[2, 9:] = 0
    return model, {"audio": frames, "audio_lengths": torch.tensor([30, 21, 9])}


def test_beam_one_equals_greedy():
    model, batch = tiny_s2t()
    greedy = greedy_search(model, batch, max_len_b=10)
    beam = beam_search(model, batch, beam=1, lenpen=0.0, max_len_b=10)
    assert [g[0].tokens for g in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert math.isclose(g[0].score, b[0].score, rel_tol=1e-5)


def test_max_length_follows_the_source_length():
    model, batch = tiny_s2t()
    a, b = 0.2, 1
    limits = [int(a * n + b) for n in batch["audio_lengths"].tolist()]
    for hyps in (
        beam_search(model, batch, beam=3, max_len_a=a, max_len_b=b, nbest=3),
        greedy_search(model, batch, max_len_a=a, max_len_b=b),
    ):
        for limit, nbest in zip(limits, hyps):
            assert nbest and all(1 <= len(h.tokens) <= limit for h in nbest)
            assert all(PAD not in h.tokens and EOS not in h.tokens for h in nbest)
    assert max(len(h[0].tokens) for h in greedy_search(model, batch, max_len_b=3)) == 3


def test_padded_batch_search_equals_each_utterance_alone():
    model, batch = tiny_s2t()
    together = beam_search(model, batch, beam=4, max_len_b=8, nbest=2)
    for i, n in enumerate(batch["audio_lengths"].tolist()):
        alone = beam_search(
            model,
            {"audio": batch["audio"][i : i + 1, :n], "audio_lengths": torch.tensor([n])},
            beam=4,
            max_len_b=8,
            nbest=2,
        )[0]
        assert [h.tokens for h in alone] == [h.tokens for h in together[i]]
        assert all(math.isclose(x.score, y.score, rel_tol=1e-4) for x, y in zip(alone, together[i]))

"""`speechxl <command>`: argument parsing only.

Each command has one `_add_<command>` function that declares its flags and points `func` at a
runner; the runner imports the library lazily (so `speechxl --help` is instant) and calls one
library function. Flags that mean the same thing are spelled the same way in every command.
"""
from __future__ import annotations

import argparse
import sys


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="synthesise SynthST, a spoken En<->De/Fr/Es corpus (espeak-ng), in MuST-C or CoVoST 2 layout",
        description="Generate SynthST: sentences from a bilingual grammar with exact translations, "
        "spoken by espeak-ng with several voices; the test split uses a voice training never hears. "
        "Deterministic: the same seed gives the same bytes.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layout", choices=["mustc", "covost2"], default="mustc", help="on-disk layout to write")
    p.add_argument("--langs", default="de", help="comma-separated target languages among de,fr,es")
    p.add_argument("--train", type=int, default=1000, help="training utterances")
    p.add_argument("--dev", type=int, default=100, help="dev utterances")
    p.add_argument("--test", type=int, default=100, help="test utterances (held-out voice)")
    p.add_argument("--ext-mt", type=int, default=0, help="extra text-only parallel pairs (external MT data)")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--jobs", type=int, default=0, help="synthesis processes (0: one per CPU core)")

    def run(a):
        from speechxl.data.corpus.synth import synthesize

        synthesize(
            out=a.out, layout=a.layout, langs=a.langs.split(","), n_train=a.train, n_dev=a.dev,
            n_test=a.test, n_ext_mt=a.ext_mt, seed=a.seed, jobs=a.jobs,
        )

    p.set_defaults(func=run)


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prep",
        help="raw MuST-C / CoVoST 2 corpus -> manifests (fairseq S2T TSV), joint SentencePiece, prep report",
    )
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="{mustc,covost2}")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", required=True, help="output directory for manifests, vocab and report")
        q.add_argument("--vocab-size", type=int, default=8000, help="SentencePiece vocabulary size")
        q.add_argument("--ext-mt", default=None, help="directory of external MT text (train.<src>, train.<tgt>)")
        q.add_argument("--min-seconds", type=float, default=0.1, help="drop utterances shorter than this")
        q.add_argument("--max-seconds", type=float, default=30.0, help="drop utterances longer than this")

    m = corpora.add_parser("mustc", help="MuST-C v1/v2: en-XX/data/{split}/{wav,txt}")
    m.add_argument("--root", required=True, help="MuST-C root (containing en-XX/)")
    m.add_argument("--lang", required=True, help="target language, e.g. de")
    common(m)

    c = corpora.add_parser("covost2", help="CoVoST 2 on a Common Voice root: <src>/{clips,validated.tsv}")
    c.add_argument("--root", required=True, help="data root containing <src>/clips, <src>/validated.tsv "
                   "and <src>/covost_v2.<src>_<tgt>.tsv")
    c.add_argument("--src", required=True, help="source (speech) language, e.g. en")
    c.add_argument("--tgt", required=True, help="target (text) language, e.g. de")
    common(c)

    def run(a):
        if a.corpus == "mustc":
            from speechxl.data.corpus.mustc import prepare_mustc

            prepare_mustc(root=a.root, lang=a.lang, out=a.out, vocab_size=a.vocab_size, ext_mt=a.ext_mt,
                          min_seconds=a.min_seconds, max_seconds=a.max_seconds)
        else:
            from speechxl.data.corpus.covost2 import prepare_covost2

            prepare_covost2(root=a.root, src=a.src, tgt=a.tgt, out=a.out, vocab_size=a.vocab_size,
                            ext_mt=a.ext_mt, min_seconds=a.min_seconds, max_seconds=a.max_seconds)

    p.set_defaults(func=run)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (resumes from the run directory's last checkpoint)",
        description="Train from CONF.yaml, with key=value overrides (e.g. train.lr=5e-4 model.encoder_layers=2). "
        "Run under torchrun for several GPUs or processes.",
    )
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config (dotted keys)")

    def run(a):
        from speechxl.train.loop import train_from_config

        train_from_config(a.config, a.overrides)

    p.set_defaults(func=run)


def _add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="offline decoding of a manifest split or audio files, with sacreBLEU")
    p.set_defaults(func=_not_yet("translate"))


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="incremental (streaming) decoding while audio arrives")
    p.set_defaults(func=_not_yet("stream"))


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="sacreBLEU / chrF (and WER for ASR) of hypotheses against references",
        description="Case-sensitive detokenized sacreBLEU (13a) and chrF, as MuST-C and CoVoST 2 report them, "
        "with signatures; or WER (lower-cased, punctuation removed) for transcripts.",
    )
    p.add_argument("--hyp", required=True, help="hypotheses, one segment per line")
    p.add_argument("--ref", required=True, help="references, one segment per line")
    p.add_argument("--metric", choices=["bleu", "wer"], default="bleu", help="bleu (with chrF) or wer")
    p.add_argument("--out", default=None, help="also write the result as JSON here")

    def run(a):
        import json

        from speechxl.eval.bleu import score_files

        print(json.dumps(score_files(a.hyp, a.ref, metric=a.metric, out=a.out)))

    p.set_defaults(func=run)


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average the weights of several checkpoints")
    p.set_defaults(func=_not_yet("average"))


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import checkpoints from HF transformers / fairseq")
    formats = p.add_subparsers(dest="format", required=True, metavar="{hf-speech2text,fairseq-wav2vec2}")
    h = formats.add_parser("hf-speech2text", help="HF Speech2Text directory -> speechxl checkpoint directory")
    h.add_argument("src", help="HF checkpoint directory (config.json, weights, tokenizer files)")
    h.add_argument("out", help="speechxl checkpoint directory to write")
    w = formats.add_parser("fairseq-wav2vec2", help="fairseq wav2vec 2.0 .pt -> HF Wav2Vec2Model directory")
    w.add_argument("src", help="fairseq checkpoint (.pt), pre-trained or CTC fine-tuned")
    w.add_argument("out", help="output directory")
    p.set_defaults(func=_not_yet("convert"))


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="your score.json files beside the published MuST-C / CoVoST 2 numbers")
    p.set_defaults(func=_not_yet("leaderboard"))


def _not_yet(name: str):
    def run(_args):
        sys.exit(f"speechxl {name}: not yet implemented")

    return run


COMMANDS = [
    _add_synth, _add_prep, _add_train, _add_translate, _add_stream, _add_score, _add_average,
    _add_convert, _add_leaderboard,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speechxl",
        description="speechxl: end-to-end speech translation (XSTNet, Chimera, COSTT, FAT-ST) in one toolkit.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

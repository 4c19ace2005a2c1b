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
    p.add_argument("--out", required=True, help="output directory (created; must be empty)")
    p.add_argument(
        "--layout",
        choices=["mustc", "covost2"],
        default="mustc",
        help="on-disk layout to write: MuST-C v1 (en-XX/data/<split>/{wav,txt}) or CoVoST 2 on a "
        "Common Voice root (<src>/clips/*.mp3, validated.tsv, covost_v2.<src>_<tgt>.tsv)",
    )
    p.add_argument(
        "--langs",
        default="de",
        help="comma-separated target languages among de,fr,es; with de, covost2 also writes de->en "
        "(German speech, English text)",
    )
    p.add_argument("--train", type=int, default=1000, help="training utterances")
    p.add_argument("--dev", type=int, default=100, help="dev utterances")
    p.add_argument("--test", type=int, default=100, help="test utterances (held-out voice)")
    p.add_argument(
        "--ext-mt",
        type=int,
        default=0,
        help="extra text-only parallel pairs, disjoint from the spoken sentences "
        "(external MT data, written to OUT/ext_mt/train.<lang>)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--jobs", type=int, default=0, help="synthesis processes (0: one per CPU core)")

    def run(a):
        from speechxl.synth.synth import synthesize

        try:
            synthesize(
                out=a.out,
                layout=a.layout,
                langs=a.langs.split(","),
                n_train=a.train,
                n_dev=a.dev,
                n_test=a.test,
                n_ext_mt=a.ext_mt,
                seed=a.seed,
                jobs=a.jobs,
            )
        except (ValueError, FileExistsError) as err:  # bad flags or a non-empty --out: a message, no traceback
            sys.exit(f"speechxl synth: {err}")

    p.set_defaults(func=run)


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prep",
        help="raw MuST-C / CoVoST 2 corpus -> manifests (fairseq S2T TSV), joint SentencePiece, prep report",
        description="Read a corpus in its published layout and write OUT/<split>.tsv manifests (fairseq S2T "
        "columns + src_text src_lang tgt_lang), a joint SentencePiece model OUT/spm.model with <audio> <asr> "
        "<ast> and one <xx> tag per language, and OUT/prep_report.json listing every skipped utterance and why. "
        "Audio that is not 16 kHz mono is converted once into OUT. Safe to re-run: finished conversions and an "
        "unchanged vocabulary are reused.",
    )
    corpora = p.add_subparsers(dest="corpus", required=True, metavar="{mustc,covost2}")

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--out", required=True, help="output directory for manifests, vocab and report")
        q.add_argument(
            "--vocab-size",
            type=int,
            default=8000,
            help="SentencePiece vocabulary size (lowered, with a note in the report, when the "
            "training text is too small for it)",
        )
        q.add_argument(
            "--ext-mt",
            default=None,
            help="directory of external MT text: aligned train.<src> and train.<tgt>; written as "
            "OUT/ext_mt.tsv and added to the vocabulary's training text",
        )
        q.add_argument("--min-seconds", type=float, default=0.1, help="drop utterances shorter than this")
        q.add_argument(
            "--max-seconds",
            type=float,
            default=30.0,
            help="drop training utterances longer than this (evaluation splits keep them)",
        )
        q.add_argument(
            "--exclude-text",
            nargs="+",
            default=[],
            metavar="MANIFEST",
            help="drop every utterance whose source text appears in these manifests (e.g. keep "
            "dev/test sentences out of pre-training audio)",
        )

    m = corpora.add_parser("mustc", help="MuST-C v1/v2: en-XX/data/{split}/{wav,txt}")
    m.add_argument("--root", required=True, help="MuST-C root (containing en-XX/)")
    m.add_argument("--lang", required=True, help="target language, e.g. de")
    m.add_argument(
        "--corpus-version",
        default="unknown",
        choices=["v1", "v2", "unknown"],
        help="MuST-C release (v1 and v2 have different references, so their scores never share a "
        "leaderboard table); recorded in prep_report.json and in every score.json",
    )
    common(m)

    c = corpora.add_parser("covost2", help="CoVoST 2 on a Common Voice root: <src>/{clips,validated.tsv}")
    c.add_argument(
        "--root",
        required=True,
        help="data root containing <src>/clips, <src>/validated.tsv "
        "and <src>/covost_v2.<src>_<tgt>.tsv (or the <src> directory itself)",
    )
    c.add_argument("--src", required=True, help="source (speech) language, e.g. en")
    c.add_argument("--tgt", required=True, help="target (text) language, e.g. de")
    c.add_argument("--jobs", type=int, default=2, help="processes decoding mp3 clips to 16 kHz WAV")
    common(c)

    def run(a):
        from speechxl.errors import DataError

        try:
            if a.corpus == "mustc":
                from speechxl.data.corpus.mustc import prepare_mustc

                prepare_mustc(
                    root=a.root,
                    lang=a.lang,
                    out=a.out,
                    vocab_size=a.vocab_size,
                    ext_mt=a.ext_mt,
                    min_seconds=a.min_seconds,
                    max_seconds=a.max_seconds,
                    exclude_text=a.exclude_text,
                    corpus_version=a.corpus_version,
                )
            else:
                from speechxl.data.corpus.covost2 import prepare_covost2

                prepare_covost2(
                    root=a.root,
                    src=a.src,
                    tgt=a.tgt,
                    out=a.out,
                    vocab_size=a.vocab_size,
                    ext_mt=a.ext_mt,
                    min_seconds=a.min_seconds,
                    max_seconds=a.max_seconds,
                    jobs=a.jobs,
                    exclude_text=a.exclude_text,
                )
        except DataError as err:
            sys.exit(f"speechxl prep: {err}")

    p.set_defaults(func=run)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (resumes from the run directory's last checkpoint)",
        description="Train from CONF.yaml, with key=value overrides (e.g. train.lr=5e-4 model.encoder_layers=2). "
        "Writes run_dir/config.yaml (the resolved config), run_dir/train_log.jsonl (train and validation "
        "records), run_dir/checkpoints/ckpt-<update>/ with `last` and `best` links. Run again with the same "
        "run_dir to resume exactly where the last checkpoint left off. Run under torchrun for several GPUs, "
        "processes or nodes (see README: Multi-GPU and multi-node).",
    )
    p.add_argument("--config", required=True, help="experiment YAML (sections: run_dir, model, data, train, stages)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides with dotted keys; values are read as YAML (train.amp=bf16, "
        "data.tasks=[st,mt]); one field of a progressive stage by its name or number "
        "(stages.mt_pretrain.max_update=2000, stages.2.tasks.ext_mt=0.5)",
    )

    p.add_argument(
        "--until-stage",
        default=None,
        metavar="NAME|N",
        help="train through the end of this progressive stage (its name, or its number from 1), save "
        "and stop; running again without it resumes into the next stage",
    )

    def run(a):
        from speechxl.train.loop import train_from_config

        train_from_config(a.config, a.overrides, until_stage=a.until_stage)

    p.set_defaults(func=run)


def _add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "translate",
        help="offline decoding of a manifest split or audio files, with sacreBLEU",
        description="Beam search with the model of a checkpoint directory. Writes OUT/hyp.txt (input order), "
        "OUT/ref.txt and OUT/score.json (sacreBLEU with its signature, or WER for --task asr).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (e.g. exp/run/avg)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="manifest TSV of the split to decode (references are scored)")
    src.add_argument("--audio", nargs="+", help="audio files to translate (no references)")
    src.add_argument(
        "--talks",
        metavar="MANIFEST",
        help="IWSLT long-form scoring: translate the whole talk wavs of a MuST-C-layout manifest "
        "(VAD segments), re-segment to the reference segments with mweralign, sacreBLEU; beside "
        "it the same model on the gold segments (OUT/score.json)",
    )
    p.add_argument(
        "--segment",
        choices=["none", "vad"],
        default="none",
        help="--audio: vad cuts long audio at pauses (webrtcvad, at most --max-segment s) and writes "
        "subtitles OUT/<name>.<format> with the segments' times",
    )
    p.add_argument("--format", choices=["srt", "vtt", "txt"], default="srt", help="subtitle format of --segment vad")
    p.add_argument("--max-segment", type=float, default=20.0, help="longest VAD segment in seconds")
    p.add_argument(
        "--out",
        required=True,
        help="output directory: hyp.txt (one line per input, in input order; empty for an input that "
        "could not be translated), ref.txt, ids.txt, score.json; models with several outputs "
        "(COSTT's transcript) add hyp.<output>.txt",
    )
    p.add_argument(
        "--task",
        default="st",
        help="the task to decode (speechxl/tasks.py): st (translate, the default), asr (transcribe), mt "
        "(a text manifest), or any task with an output",
    )
    p.add_argument(
        "--src-lang",
        default=None,
        help="source language of --audio files (default en), or of manifest rows without a src_lang "
        "column (fairseq's bilingual manifests; default: the checkpoint's data.src_lang)",
    )
    p.add_argument(
        "--tgt-lang",
        default=None,
        help="target language (the forced tag, for models trained with language tags) of --audio files "
        "(default de), or of manifest rows without a tgt_lang column (default: data.tgt_lang)",
    )
    p.add_argument("--beam", type=int, default=5, help="beam size")
    p.add_argument("--lenpen", type=float, default=1.0, help="fairseq length penalty: score / length**lenpen")
    p.add_argument("--max-len-a", type=float, default=0.0, help="max output length = a * source length + b")
    p.add_argument("--max-len-b", type=int, default=200, help="max output length = a * source length + b")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="batch budget in input units (default: 50000 fbank frames or 3.2M wave samples)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")

    def run(a):
        import json

        from speechxl.inference.translate import DecodeOptions, translate

        device = a.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        options = DecodeOptions(
            beam=a.beam, lenpen=a.lenpen, max_len_a=a.max_len_a, max_len_b=a.max_len_b, max_tokens=a.max_tokens
        )
        if a.talks or a.segment == "vad":  # long audio: speechxl/inference/longform.py
            from speechxl.inference import longform

            vad = longform.VadOptions(max_seconds=a.max_segment)
            if a.talks:
                result = longform.score_talks(
                    a.checkpoint, a.talks, a.out, options=options, vad=vad, device=device, task=a.task
                )
            else:
                result = longform.translate_long(
                    a.checkpoint,
                    a.audio,
                    a.out,
                    fmt=a.format,
                    task=a.task,
                    options=options,
                    vad=vad,
                    device=device,
                    src_lang=a.src_lang,
                    tgt_lang=a.tgt_lang,
                )
                result = {"files": [f["subtitles"] for f in result["files"]]}
            print(json.dumps(result))
            return
        result = translate(
            a.checkpoint,
            out=a.out,
            manifest=a.manifest,
            audio=a.audio,
            task=a.task,
            options=options,
            device=device,
            src_lang=a.src_lang,
            tgt_lang=a.tgt_lang,
        )
        print(json.dumps(result))

    p.set_defaults(func=run)


def _add_stream(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stream",
        help="simultaneous translation of a file or of raw PCM on stdin, printed as it is committed",
        description="Reads audio in chunks of --chunk-ms and prints each committed piece of the translation with "
        "the audio time at which it was committed (committed text is never retracted). Policies: waitk (fixed "
        "pre-decision), la (local agreement LA-n), alignatt (cross-attention). Long audio is cut into utterances "
        "at pauses (webrtcvad) or at --max-segment seconds. See speechxl/inference/streaming.py.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint directory")
    p.add_argument(
        "--audio", required=True, help="audio file, or - for raw 16 kHz mono PCM on stdin (--pcm-format s16le or f32le)"
    )
    p.add_argument("--pcm-format", choices=["s16le", "f32le"], default="s16le", help="sample format of stdin")
    p.add_argument("--chunk-ms", type=float, default=280.0, help="audio per chunk (default 280 ms)")
    p.add_argument("--realtime", action="store_true", help="pace a file like a microphone (sleep per chunk)")
    p.add_argument("--policy", choices=["waitk", "la", "alignatt"], default="waitk")
    p.add_argument("--waitk", type=int, default=3, help="wait-k: chunks read before the first write")
    p.add_argument("--la-n", type=int, default=2, help="LA-n: commit the agreement of the last n hypotheses")
    p.add_argument("--la-beam", type=int, default=1, help="LA-n: beam of each re-decoding")
    p.add_argument("--frames", type=int, default=2, help="AlignAtt f: wait while attention is in the last f frames")
    p.add_argument("--attn-layer", type=int, default=-1, help="AlignAtt: decoder layer whose attention is read")
    p.add_argument(
        "--segment",
        choices=["none", "vad"],
        default="vad",
        help="vad (default): end an utterance at a pause or at --max-segment seconds",
    )
    p.add_argument("--max-segment", type=float, default=20.0, help="longest utterance in seconds")
    p.add_argument(
        "--format",
        choices=["srt", "vtt", "txt"],
        default=None,
        help="also write subtitles of the finished utterances to --out",
    )
    p.add_argument("--out", default=None, help="subtitle file for --format")
    p.add_argument("--task", default="st")
    p.add_argument("--src-lang", default="en")
    p.add_argument("--tgt-lang", default="de", help="forced target language tag")
    p.add_argument("--device", default="cpu")

    def run(a):
        from speechxl.inference.longform import VadOptions, write_subtitles
        from speechxl.inference.streaming import (
            PolicyOptions,
            StreamingTranslator,
            file_chunks,
            pcm_chunks,
            stream_segments,
        )
        from speechxl.models import load_model

        if a.format and not a.out:
            raise SystemExit("speechxl stream: --format needs --out")
        model, vocab, config = load_model(a.checkpoint, device=a.device)
        options = PolicyOptions(
            policy=a.policy, k=a.waitk, la_n=a.la_n, la_beam=a.la_beam, frames=a.frames, attn_layer=a.attn_layer
        )
        translator = StreamingTranslator(
            model,
            vocab,
            config.get("data", {}),
            options,
            task=a.task,
            tgt_lang=a.tgt_lang,
            src_lang=a.src_lang,
            device=a.device,
        )
        if a.audio == "-":
            chunks = pcm_chunks(sys.stdin.buffer, a.chunk_ms, a.pcm_format)
        else:
            chunks = file_chunks(a.audio, a.chunk_ms, realtime=a.realtime)
        vad = VadOptions(max_seconds=a.max_segment) if a.segment == "vad" else None
        cues, current = [], []
        for piece in stream_segments(translator, chunks, vad=vad):
            if piece.text:
                print(f"[{piece.time:8.2f}s] {piece.text}", flush=True)
            current.append(piece.text)
            if piece.end is not None:
                cues.append((piece.start, piece.end, "".join(current).strip()))
                current = []
        if a.format:
            write_subtitles(a.out, [(s, e) for s, e, _ in cues], [t for _, _, t in cues], a.format)

    p.set_defaults(func=run)


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
    p = sub.add_parser(
        "average",
        help="average the weights of several checkpoints into one that translates (no optimizer state)",
        description="Element-wise mean of model weights (accumulated in fp32) of the given checkpoint "
        "directories, or of a run's last N checkpoints, or of the N checkpoints nearest the best validation "
        "BLEU. Config and vocabulary are taken from the last input.",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--inputs", nargs="+", metavar="CKPT_DIR", help="checkpoint directories to average")
    which.add_argument("--run-dir", help="a training run directory (uses its checkpoints/)")
    p.add_argument("--last", type=int, default=None, metavar="N", help="with --run-dir: the last N checkpoints")
    p.add_argument(
        "--best-around",
        type=int,
        default=None,
        metavar="N",
        help="with --run-dir: the best checkpoint (by the run's train.best_metric) and the N-1 saved "
        "checkpoints nearest to it",
    )
    p.add_argument("--out", required=True, help="checkpoint directory to write (must not exist)")

    def run(a):
        from speechxl.checkpoint import average_checkpoints, select_around_best, select_last

        if a.run_dir is not None and (a.last is None) == (a.best_around is None):
            p.error("--run-dir needs exactly one of --last N or --best-around N")
        if a.inputs is not None and (a.last is not None or a.best_around is not None):
            p.error("--last / --best-around go with --run-dir, not --inputs")
        if a.inputs is not None:
            inputs = a.inputs
        elif a.last is not None:
            inputs = select_last(a.run_dir, a.last)
        else:
            inputs = select_around_best(a.run_dir, a.best_around)
        out = average_checkpoints(inputs, a.out)
        print(f"averaged {len(inputs)} checkpoint(s) into {out}: " + " ".join(str(i) for i in inputs))

    p.set_defaults(func=run)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="import checkpoints from HF transformers / fairseq")
    formats = p.add_subparsers(dest="format", required=True, metavar="{hf-speech2text,fairseq-wav2vec2,fairseq-s2t}")
    h = formats.add_parser(
        "hf-speech2text",
        help="HF Speech2Text directory -> speechxl checkpoint directory",
        description="Import an HF Speech2TextForConditionalGeneration directory (config.json, model.safetensors "
        "or pytorch_model.bin, sentencepiece.bpe.model, vocab.json) as a speechxl `s2t` checkpoint "
        "(config.yaml, model.safetensors, spm.model, vocab.json) that translates exactly like the original.",
    )
    h.add_argument("src", help="HF checkpoint directory (config.json, weights, tokenizer files)")
    h.add_argument("out", help="speechxl checkpoint directory to write")
    w = formats.add_parser("fairseq-wav2vec2", help="fairseq wav2vec 2.0 .pt -> HF Wav2Vec2Model directory")
    w.add_argument("src", help="fairseq checkpoint (.pt), pre-trained or CTC fine-tuned")
    w.add_argument("out", help="output directory")
    f = formats.add_parser(
        "fairseq-s2t",
        help="fairseq s2t_transformer checkpoint .pt -> speechxl checkpoint directory",
        description="Import a fairseq s2t_transformer checkpoint (read without running code from the file) as a "
        "speechxl `s2t` checkpoint that decodes like fairseq. The vocabulary is fairseq's dictionary (spm_*.txt) "
        "and SentencePiece model named by its data config; CMVN, SpecAugment and language tags come from there too.",
    )
    f.add_argument("src", help="fairseq checkpoint (.pt), e.g. checkpoint_best.pt")
    f.add_argument("out", help="speechxl checkpoint directory to write")
    f.add_argument("--config", default=None, help="fairseq data config (config_st.yaml) the model was trained with")
    f.add_argument("--spm", default=None, help="SentencePiece model (default: the config's bpe_tokenizer)")
    f.add_argument("--dict", default=None, help="fairseq dictionary spm_*.txt (default: the config's vocab_filename)")

    def run(a):
        if a.format == "hf-speech2text":
            from speechxl.convert.hf_speech2text import convert_hf_speech2text

            print(convert_hf_speech2text(a.src, a.out))
        elif a.format == "fairseq-wav2vec2":
            from speechxl.convert.fairseq_wav2vec2 import convert_fairseq_wav2vec2

            convert_fairseq_wav2vec2(a.src, a.out)
        elif a.format == "fairseq-s2t":
            from speechxl.convert.fairseq_s2t import convert_fairseq_s2t

            print(convert_fairseq_s2t(a.src, a.out, config=a.config, spm_model=a.spm, dictionary=a.dict))

    p.set_defaults(func=run)


def _add_fairseq(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fairseq", help="fairseq S2T data in (prep) and out (export)")
    ways = p.add_subparsers(dest="way", required=True, metavar="{prep,export}")
    i = ways.add_parser(
        "prep",
        help="fairseq-prepared data (fbank80.zip / flac.zip manifests, config_*.yaml) -> speechxl data",
        description="Read fairseq S2T data as it lies on disk and write OUT: the manifests with absolute audio "
        "paths and the languages filled in, spm.model + vocab.json (fairseq's dictionary ids) and config.yaml, an "
        "experiment config that `speechxl train --config OUT/config.yaml` runs (model: s2t, size s; override "
        "with key=value). Features stay in the zips, read as stored.",
    )
    i.add_argument("--config", required=True, help="fairseq data config, e.g. config_st.yaml")
    i.add_argument("--manifests", required=True, help="directory of the fairseq manifests (*.tsv)")
    i.add_argument("--out", required=True, help="speechxl data directory to write")
    i.add_argument("--src-lang", default="", help="source language of manifests without a src_lang column")
    i.add_argument("--tgt-lang", default="", help="target language of manifests without a tgt_lang column")
    i.add_argument("--spm", default=None, help="SentencePiece model (default: the config's bpe_tokenizer)")
    i.add_argument("--dict", default=None, help="fairseq dictionary (default: the config's vocab_filename)")
    e = ways.add_parser(
        "export",
        help="speechxl manifests -> fairseq S2T data (fbank80.zip or flac.zip, <split>_<task>.tsv, config_<task>.yaml)",
        description="Write what fairseq's speech_to_text prep scripts write: a ZIP_STORED fbank80.zip of <id>.npy "
        "80-dim log-mel matrices (or flac.zip), <split>_<task>.tsv manifests with zip byte ranges, the "
        "SentencePiece model, its fairseq dictionary spm_*.txt and config_<task>.yaml (utterance CMVN).",
    )
    e.add_argument("--manifest-dir", required=True, help="speechxl data directory (<split>.tsv, spm.model)")
    e.add_argument("--splits", nargs="+", required=True, help="splits to export, e.g. train dev tst-COMMON")
    e.add_argument("--out", required=True, help="fairseq data directory to write")
    e.add_argument("--task", choices=["st", "asr"], default="st", help="st (tgt_text) or asr (src_text)")
    e.add_argument(
        "--audio",
        choices=["fbank", "flac"],
        default="fbank",
        help="fbank80.zip of features (s2t_transformer), or flac.zip of audio (use_audio_input)",
    )
    e.add_argument(
        "--specaugment",
        choices=["lb", "ld", "sm", "ss", "none"],
        default="lb",
        help="SpecAugment policy written into the config (fairseq's prep default: lb)",
    )
    e.add_argument(
        "--lang-tags",
        choices=["auto", "yes", "no"],
        default="auto",
        help="prepend_tgt_lang_tag with <lang:xx> pieces (auto: when the vocabulary has the tags)",
    )

    def run(a):
        import json

        if a.way == "prep":
            from speechxl.data.fairseq_prep import import_fairseq_data

            result = import_fairseq_data(
                a.config,
                a.manifests,
                a.out,
                src_lang=a.src_lang,
                tgt_lang=a.tgt_lang,
                spm_model=a.spm,
                dictionary=a.dict,
            )
        else:
            from speechxl.data.fairseq_prep import export_fairseq_data

            result = export_fairseq_data(
                a.manifest_dir,
                a.out,
                a.splits,
                task=a.task,
                audio=a.audio,
                specaugment=None if a.specaugment == "none" else a.specaugment,
                lang_tags={"auto": None, "yes": True, "no": False}[a.lang_tags],
            )
        print(json.dumps(result))

    p.set_defaults(func=run)


def _add_pretrain_w2v(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain-w2v",
        help="self-supervised wav2vec 2.0 pre-training of the acoustic encoder on unlabelled audio",
        description="Pre-train a wav2vec 2.0 encoder (contrastive + diversity loss over quantised targets) on "
        "the audio column of a manifest; text is ignored. Checkpoints go to OUT/checkpoints/ckpt-<update>; "
        "OUT/checkpoints/last is an HF Wav2Vec2Model directory that ST models load as their acoustic "
        "encoder. Re-running the same command resumes from `last`.",
    )
    p.add_argument("--manifest", required=True, help="manifest TSV whose audio column is used")
    p.add_argument("--out", required=True, help="run directory (checkpoints, train_log.jsonl)")
    p.add_argument(
        "--config",
        default="base",
        help="model: tiny, base or large (LV-60), or a YAML with `preset:` and Wav2Vec2Config fields",
    )
    p.add_argument("--max-updates", type=int, default=400_000, help="stop after this many updates")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (Adam)")
    p.add_argument(
        "--warmup-updates",
        type=int,
        default=None,
        help="linear warmup, then linear decay to 0 (default: 8%% of --max-updates)",
    )
    p.add_argument("--max-tokens", type=int, default=1_400_000, help="audio samples per batch (after cropping)")
    p.add_argument("--save-interval-updates", type=int, default=10_000, help="save a checkpoint every N updates")
    p.add_argument("--seed", type=int, default=1, help="random seed")

    def run(a):
        from speechxl.train.pretrain_w2v import PretrainOptions, pretrain_wav2vec2

        options = PretrainOptions(
            max_updates=a.max_updates,
            lr=a.lr,
            warmup_updates=a.warmup_updates,
            max_tokens=a.max_tokens,
            save_interval_updates=a.save_interval_updates,
            seed=a.seed,
        )
        pretrain_wav2vec2(a.manifest, a.out, config=a.config, options=options)

    p.set_defaults(func=run)


def _add_leaderboard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "leaderboard",
        help="your score.json files beside the published MuST-C / CoVoST 2 numbers, in comparable tables",
        description="One table per (corpus, corpus version, split, BLEU type): only numbers computed on the same "
        "references the same way share a table (MuST-C v1 vs v2, tst-COMMON vs tst-HE, tokenized vs detokenized "
        "BLEU never do). Rows are systems (published and yours, yours marked), columns directions, ranked by the "
        "mean over the largest set of directions systems report (others follow, with a rank per direction). "
        "Your BLEU type is read from the sacreBLEU signature in score.json; a result "
        "whose corpus, version, split, direction or signature is unknown goes to a table that says so. When two "
        "or more of your results were scored against the same references (hyp.txt / ref.txt beside score.json, "
        "or its hyp_file / ref_file), sacreBLEU's paired bootstrap resampling gives a p-value for each pair. "
        "Unreadable inputs are reported on stderr, naming the file and line; the rest is still shown.",
    )
    p.add_argument(
        "results",
        nargs="*",
        metavar="RESULT",
        help="score.json files (from `speechxl translate`), run directories (their decode_*/score.json, "
        "else score.json) or leaderboard.jsonl files (one JSON object per line, as the recipes write)",
    )
    p.add_argument(
        "--format",
        choices=["md", "csv", "json"],
        default="md",
        help="md: one Markdown table per comparable set, then the paired tests; csv: one line per "
        "(table, system, direction); json: everything, structured (default: md)",
    )
    p.add_argument(
        "--png",
        default=None,
        metavar="FILE",
        help="also draw a bar chart per direction holding one of your results (every direction when you "
        "give none), yours highlighted; needs matplotlib: pip install 'speechxl[plots]'",
    )
    p.add_argument(
        "--published",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the published numbers (speechxl/eval/published.yaml, each with its source)",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="paired bootstrap resamples per pair of your results on the same references (0: no tests)",
    )

    def run(a):
        from speechxl.eval.leaderboard import build_leaderboard, plot_leaderboard, render
        from speechxl.eval.plots import PlotsUnavailable, check_png, require_matplotlib

        if a.png:  # fail before the work, not after it
            try:
                require_matplotlib()
            except PlotsUnavailable as err:
                sys.exit(f"speechxl leaderboard: {err}")
            check_png(a.png)
        if not a.results and not a.published:
            p.error("give at least one RESULT, or leave --published on")
        board = build_leaderboard(
            a.results,
            published=a.published,
            bootstrap=a.bootstrap,
            on_problem=lambda err: print(f"speechxl leaderboard: {err}", file=sys.stderr),
        )
        if not board.tables:
            sys.exit("speechxl leaderboard: no readable results")
        sys.stdout.write(render(board, a.format))
        if a.png:
            print(f"speechxl leaderboard: wrote {plot_leaderboard(board, a.png)}", file=sys.stderr)

    p.set_defaults(func=run)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="training and validation curves of one or more runs (train_log.jsonl) in one PNG",
        description="Loss (train and valid), the validation metric (BLEU, else WER, accuracy or perplexity) and "
        "the learning rate of every RUN_DIR, overlaid, against update (and against wall time when the log "
        "records carry one); dotted vertical lines mark where a progressive schedule's stage changes. A "
        "truncated log line or a run without validation records is reported on stderr; the rest is plotted. "
        "Needs matplotlib: pip install 'speechxl[plots]'.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories (or train_log.jsonl files)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="the PNG to write")

    def run(a):
        from speechxl.eval.plots import PlotsUnavailable, has_time, plot_runs

        warn = lambda err: print(f"speechxl plot: {err}", file=sys.stderr)  # noqa: E731
        try:
            out = plot_runs(a.runs, a.out, on_problem=warn)
        except PlotsUnavailable as err:
            sys.exit(f"speechxl plot: {err}")
        if not has_time(a.runs):
            print(
                "speechxl plot: the log records carry no time, so the curves are against update only", file=sys.stderr
            )
        print(f"speechxl plot: wrote {out}", file=sys.stderr)

    p.set_defaults(func=run)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="a delta checkpoint (parameter-efficient fine-tuning) + its parent -> one full checkpoint",
        description="Load a delta checkpoint's parent (checked by SHA-256) and the tensors the child trained, "
        "and write one full checkpoint that no longer needs the parent.",
    )
    p.add_argument("--checkpoint", required=True, help="the delta checkpoint directory")
    p.add_argument("--out", required=True, help="checkpoint directory to write (must not exist)")

    def run(a):
        from speechxl.models.base import merge

        print(f"merged {a.checkpoint} and its parent into {merge(a.checkpoint, a.out)}")

    p.set_defaults(func=run)


def _add_extend_vocab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extend-vocab",
        help="append a new language's tag and pieces to a trained model's SentencePiece vocabulary",
        description="Adding a language to a trained model: the parent's SentencePiece model keeps every id "
        "and gets the new language tags plus the most likely pieces of a unigram model trained on the new "
        "text that it lacks (and any character it cannot spell). The parent's embedding rows then load "
        "unchanged and the new rows are appended (model.peft.parent).",
    )
    p.add_argument("--parent", required=True, help="the parent's spm.model (e.g. PARENT_CKPT/spm.model)")
    p.add_argument("--manifest", required=True, nargs="+", help="manifests whose tgt_text is the new text")
    p.add_argument("--lang", required=True, nargs="+", help="the new target language(s), e.g. fr")
    p.add_argument("--pieces", type=int, default=300, help="new pieces to add at most (default 300)")
    p.add_argument("--out", required=True, help="the extended spm.model to write (e.g. over prep's)")

    def run(a):
        import json

        from speechxl.data.manifest import read_manifest
        from speechxl.data.vocab import extend_vocab

        texts = [row["tgt_text"] for path in a.manifest for row in read_manifest(path) if row["tgt_text"]]
        _, report = extend_vocab(a.parent, texts, a.lang, a.pieces, a.out)
        print(json.dumps(report))

    p.set_defaults(func=run)


COMMANDS = [
    _add_synth,
    _add_prep,
    _add_train,
    _add_translate,
    _add_score,
    _add_average,
    _add_merge,
    _add_extend_vocab,
    _add_convert,
    _add_leaderboard,
    _add_plot,
    _add_pretrain_w2v,
    _add_fairseq,
    _add_stream,
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
    from speechxl.errors import CheckpointError, DataError, TrainingError

    try:
        args.func(args)
    except (DataError, CheckpointError, TrainingError) as err:
        # The user's data or checkpoint is wrong, not our code: one clear line, no traceback.
        sys.exit(f"speechxl {args.command}: {err}")


if __name__ == "__main__":
    main()

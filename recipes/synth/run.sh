#!/usr/bin/env bash
# SynthST demo: synthesise a spoken En->De corpus, prepare it, train the fbank S2T Transformer,
# average the last checkpoints, translate the held-out-voice test set and score it.
#
#   bash recipes/synth/run.sh [--stage N] [--stop-stage M] [--lang de] [--train 8000] [--exp exp/synth_s2t]
#
# Stages: 0 synth  1 prep  2 train  3 average  4 translate + score
set -euo pipefail

stage=0
stop_stage=4
lang=de
n_train=8000
n_dev=100
n_test=300
seed=1
vocab_size=1000
data=data/synth
exp=exp/synth_s2t
conf=recipes/synth/conf/s2t.yaml
avg_last=3
extra=()

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --lang) lang=$2; shift 2 ;;
    --train) n_train=$2; shift 2 ;;
    --dev) n_dev=$2; shift 2 ;;
    --test) n_test=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --vocab-size) vocab_size=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --conf) conf=$2; shift 2 ;;
    --avg-last) avg_last=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;  # the rest: key=value overrides for `speechxl train`
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
start=$SECONDS

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  say "stage 0: synthesise SynthST (en->$lang, $n_train/$n_dev/$n_test utterances)"
  if [[ -f "$data/raw/synth_info.json" ]]; then
    echo "$data/raw already holds a SynthST corpus; delete it to synthesise again"
  else
    rm -rf "$data/raw"  # a run killed mid-synthesis leaves a partial corpus
    speechxl synth --out "$data/raw" --layout mustc --langs "$lang" \
      --train "$n_train" --dev "$n_dev" --test "$n_test" --seed "$seed"
  fi
fi

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  say "stage 1: manifests + SentencePiece ($vocab_size)"
  speechxl prep mustc --root "$data/raw" --lang "$lang" --out "$data/en-$lang" --vocab-size "$vocab_size"
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  say "stage 2: train ($conf)"
  speechxl train --config "$conf" run_dir="$exp" data.manifest_dir="$data/en-$lang" "${extra[@]}"
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  say "stage 3: average the last $avg_last checkpoints"
  rm -rf "$exp/avg"  # derived from the checkpoints: rebuilt on every run of this stage
  speechxl average --run-dir "$exp" --last "$avg_last" --out "$exp/avg"
fi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  say "stage 4: translate tst-COMMON (held-out voice) and score"
  speechxl translate --checkpoint "$exp/avg" --manifest "$data/en-$lang/tst-COMMON.tsv" \
    --out "$exp/decode_tst-COMMON" --beam 5
  # score.json has one key per line (indented JSON): pick the score out with sed, no JSON parser needed
  printf '\nSynthST tst-COMMON (held-out voice):\n'
  sed -nE 's/^ *"(bleu|chrf|n|signature)": "?(.*[^",])"?,?$/  \1: \2/p' "$exp/decode_tst-COMMON/score.json"
  # its own leaderboard table (SynthST results never share one with MuST-C's) and the training curves
  speechxl leaderboard "$exp/decode_tst-COMMON/score.json" --no-published --png "$exp/leaderboard.png" ||
    speechxl leaderboard "$exp/decode_tst-COMMON/score.json" --no-published
  speechxl plot "$exp" --out "$exp/curves.png" || echo "(no curves PNG: pip install 'speechxl[plots]')"
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

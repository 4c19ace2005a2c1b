#!/usr/bin/env bash
# XSTNet's claim in miniature, on SynthST en->de: a small spoken set (~1,000 triples) and a large external
# MT set (~50,000 pairs), equal compute per run. Variants (conf/xstnet_<variant>.yaml):
#   st      (a) ST only
#   base    (b) XSTNet base: ST + ASR + MT on the spoken triples
#   expand  (c) XSTNet expand: MT pre-training on external + in-domain MT, then multitask keeping external MT
# each with a wav2vec 2.0 pre-trained here on unlabelled SynthST audio (init "pretrained") and/or from
# random weights (init "random"). The paper's ordering is (c) > (b) > (a).
#
#   bash recipes/synth/ablation.sh [--stage N] [--stop-stage M] [--variants "st base expand"]
#        [--inits "pretrained random"] [--jobs 2] [--train 1000] [--ext-mt 50000] [--unlabelled 8000]
#        [--w2v-updates 2500] [--mt-updates N] [--exp exp/synth_ablation] [--data data/synth_ablation]
#        [-- key=value ...]
#
# Stages: 0 synthesise the spoken set (train/dev/tst-COMMON, test voice held out) + external MT, and a
#           separate unlabelled spoken set (another seed) for wav2vec 2.0 pre-training
#         1 prep: manifests + joint SentencePiece (one vocabulary for every run); the unlabelled corpus's
#           prep drops every sentence of dev and tst-COMMON (--exclude-text)
#         2 wav2vec 2.0 self-supervised pre-training on the unlabelled audio (speechxl pretrain-w2v)
#         3 train every variant x init, --jobs at a time (one CPU thread each)
#         4 average the last 3 checkpoints, translate tst-COMMON (beam 5), score; probe whether the model
#           uses its audio at all (dev NLL with each utterance's own audio vs another's)
#         5 the table: EXP/results.md (BLEU on the held-out voice, audio use, wall time, updates)
# Equal compute is matched in wall time: text-only MT updates cost about 0.6 of an audio update here, so
# expand's 250 MT + 700 multitask updates take about as long as 800 audio updates (the table shows the
# measured times). --mt-updates sets the length of expand's MT pre-training stage (default: its config's);
# `-- key=value` overrides go to every `speechxl train` run (e.g. train.max_update=5).
set -euo pipefail

stage=0
stop_stage=5
variants="st base expand"
inits="pretrained random"
jobs=2
n_train=1000
n_dev=100
n_test=300
n_ext_mt=50000
n_unlabelled=8000
seed=1
vocab_size=1000
w2v_updates=2500
w2v_max_tokens=320000
mt_updates=
exp=exp/synth_ablation
data=data/synth_ablation
avg_last=3
overrides=()
here=$(cd "$(dirname "$0")" && pwd)

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --inits) inits=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --train) n_train=$2; shift 2 ;;
    --dev) n_dev=$2; shift 2 ;;
    --test) n_test=$2; shift 2 ;;
    --ext-mt) n_ext_mt=$2; shift 2 ;;
    --unlabelled) n_unlabelled=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --vocab-size) vocab_size=$2; shift 2 ;;
    --w2v-updates) w2v_updates=$2; shift 2 ;;
    --w2v-max-tokens) w2v_max_tokens=$2; shift 2 ;;
    --mt-updates) mt_updates=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --avg-last) avg_last=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "recipes/synth/ablation.sh: $*" >&2; exit 2; }
for v in $variants; do [[ -f $here/conf/xstnet_$v.yaml ]] || die "unknown variant $v (st, base, expand)"; done
for i in $inits; do [[ $i == pretrained || $i == random ]] || die "unknown init $i (pretrained, random)"; done
say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
start=$SECONDS
raw=$data/raw            # spoken set + external MT
unlabelled=$data/unlabelled_raw
w2v=$exp/w2v_pretrain/checkpoints/last

synth() {  # synth OUT ARGS...: skip a corpus that is already complete; a partial one is made again
  local out=$1; shift
  if [[ -f $out/synth_info.json ]]; then echo "$out already holds a SynthST corpus; delete it to synthesise again"
  else rm -rf "$out"; speechxl synth --out "$out" --layout mustc --langs de "$@"; fi
}

if run_stage 0; then
  say "stage 0: SynthST en->de: $n_train/$n_dev/$n_test spoken + $n_ext_mt external MT; $n_unlabelled unlabelled"
  synth "$raw" --train "$n_train" --dev "$n_dev" --test "$n_test" --ext-mt "$n_ext_mt" --seed "$seed"
  synth "$unlabelled" --train "$n_unlabelled" --dev 10 --test 10 --seed "$((seed + 1))"
fi

if run_stage 1; then
  say "stage 1: manifests + SentencePiece ($vocab_size, spoken + external text) -> $data/en-de"
  speechxl prep mustc --root "$raw" --lang de --out "$data/en-de" --vocab-size "$vocab_size" --ext-mt "$raw/ext_mt"
  # Pre-training never hears a sentence the spoken set evaluates on (in any voice): prep drops them and counts
  # them as excluded_text in its summary ("train kept N skipped M (excluded_text M)") and report.
  speechxl prep mustc --root "$unlabelled" --lang de --out "$data/unlabelled" --vocab-size 500 \
    --exclude-text "$data/en-de/dev.tsv" "$data/en-de/tst-COMMON.tsv"
fi

if run_stage 2 && [[ " $inits " == *" pretrained "* ]]; then
  say "stage 2: wav2vec 2.0 pre-training on unlabelled audio ($w2v_updates updates) -> $w2v"
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-$jobs} speechxl pretrain-w2v --manifest "$data/unlabelled/train.tsv" \
    --out "$exp/w2v_pretrain" --config "$here/conf/w2v_small.yaml" --max-updates "$w2v_updates" --lr 1e-3 \
    --max-tokens "$w2v_max_tokens" --save-interval-updates 500
fi

runs=()
for v in $variants; do for i in $inits; do runs+=("${v}_$i"); done; done

train_one() {  # train_one VARIANT INIT: one `speechxl train`, its wall time added up in RUN/train_seconds
  local variant=$1 init=$2 run=$exp/${1}_$2 t0=$SECONDS args
  args=(--config "$here/conf/xstnet_$variant.yaml" run_dir="$run" data.manifest_dir="$data/en-de")
  if [[ $init == pretrained ]]; then
    [[ -f $w2v/config.json ]] || die "no pre-trained wav2vec2 at $w2v (run stage 2)"
    args+=(model.w2v_path="$(cd "$w2v" && pwd -P)")
  fi
  [[ $variant == expand && -n $mt_updates ]] && args+=(stages.mt_pretrain.max_update="$mt_updates")
  mkdir -p "$run"
  OMP_NUM_THREADS=1 speechxl train "${args[@]}" "${overrides[@]}" > "$run/train.out" 2>&1 \
    || { echo "training $run failed; see $run/train.out" >&2; return 1; }
  echo $(( $(cat "$run/train_seconds" 2>/dev/null || echo 0) + SECONDS - t0 )) > "$run/train_seconds"
  echo "  $run: trained in $(( SECONDS - t0 )) s"
}

if run_stage 3; then
  say "stage 3: train ${runs[*]} ($jobs at a time, one thread each; logs in $exp/<run>/train.out)"
  pids=()
  for run in "${runs[@]}"; do
    while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
    train_one "${run%_*}" "${run##*_}" & pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || die "a training run failed (above)"
fi

if run_stage 4; then
  say "stage 4: average the last $avg_last checkpoints, translate tst-COMMON (held-out voice), score"
  for run in "${runs[@]}"; do
    dir=$exp/$run
    rm -rf "$dir/avg"
    speechxl average --run-dir "$dir" --last "$avg_last" --out "$dir/avg"
    speechxl translate --checkpoint "$dir/avg" --manifest "$data/en-de/tst-COMMON.tsv" \
      --out "$dir/decode_tst-COMMON" --beam 5 --max-tokens 3200000
    # does it listen? dev NLL from each utterance's own audio vs a neighbour's (tools/probe_audio_use.py)
    python3 "$here/../../tools/probe_audio_use.py" --checkpoint "$dir/avg" --manifest "$data/en-de/dev.tsv" \
      > "$dir/audio_use.json"
  done
fi

if run_stage 5; then
  say "stage 5: results -> $exp/results.md"
  labels=()
  for run in "${runs[@]}"; do
    case ${run%_*} in
      st) labels+=("$run=(a) ST only | ${run##*_}") ;;
      base) labels+=("$run=(b) XSTNet base | ${run##*_}") ;;
      expand) labels+=("$run=(c) XSTNet expand | ${run##*_}") ;;
    esac
  done
  python3 "$here/../../tools/results_table.py" --exp "$exp" --runs "${runs[@]}" --label "${labels[@]}" \
    --label-header "variant | wav2vec2" --out "$exp/results.md"
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

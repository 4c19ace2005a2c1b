#!/usr/bin/env bash
# Chimera's claim in miniature, on the SynthST data of the XSTNet ablation (ablation.sh stages 0-2: 1,000
# spoken triples + 50,000 external MT pairs, tst-COMMON in a held-out voice, a wav2vec 2.0 pre-trained on
# unlabelled SynthST audio). Rows, equal schedule (MT pre-training + triplet fine-tuning, same updates):
#   chimera   Chimera: memory 64, slot contrastive loss (conf/chimera.yaml)
#   noctr     the same without the contrastive loss (model.contrastive=none)
#   m16       memory 16 slots instead of 64
#   batch     the release's batch contrastive variant (negatives: the same slot of the other utterances)
#   sentence  ConST's sentence-level contrastive loss (mean-pooled encoder inputs, τ 0.02)
#   xstnet    XSTNet expand (conf/xstnet_expand.yaml: its triplet stage also trains ASR and keeps ext MT)
#
#   bash recipes/synth/chimera.sh [--stage N] [--stop-stage M] [--rows "chimera noctr m16 batch sentence xstnet"]
#        [--jobs 2] [--mt-updates 250] [--updates 950] [--exp exp/synth_chimera] [--data data/synth_ablation]
#        [--w2v DIR|random] [--ctr-ramp N] [--until-stage NAME] [--bench-len 60] [-- key=value ...]
#
# Stages: 0 the data and the pre-trained wav2vec2 (ablation.sh --stop-stage 2; skipped when present)
#         1 train every row, --jobs at a time (one CPU thread each)
#         2 average the last 3 checkpoints, translate tst-COMMON (beam 5; hypotheses of at most 60 tokens:
#           SynthST sentences have ~20, and an untrained decoder would run on to 200), score, probes
#         3 the table: EXP/results.md (tools/results_table.py: updates, wall and CPU time of training, dev ST
#           loss, BLEU, chrF, audio use, and the memory probe of tools/probe_chimera_memory.py for Chimera rows)
#         4 beam-5 decoding speed, Chimera (M 64 and 16) vs XSTNet: EXP/bench_decode.jsonl (one JSON line each);
#           --bench-len 60 (default) makes every hypothesis of both models 60 tokens long (same beam steps:
#           the ratio is the cost of a step), --bench-len 1 lets each model stop where it likes
# --updates is the total (MT + triplet); --mt-updates the MT stage (Chimera's contrastive ramp starts there).
# `-- key=value` goes to every `speechxl train` (e.g. data.max_wave_samples=320000 for a quicker run).
# --w2v random: every row starts from a randomly initialised wav2vec 2.0 (no pre-training; stage 0 then only
# makes the data). --ctr-ramp: the contrastive weight's ramp (updates; default the config's 100).
# --until-stage mt_pretrain: stop each row after its MT stage (speechxl train --until-stage); a later stage-1
# run resumes it. Rows whose MT stage is the same computation (chimera, noctr, batch, sentence: the contrastive
# loss only acts in the triplet stage) can then share one: copy exp/chimera to exp/<row> before resuming.
set -euo pipefail

stage=0
stop_stage=4
rows="chimera noctr m16 batch sentence xstnet"
jobs=2
mt_updates=250
updates=950
exp=exp/synth_chimera
data=data/synth_ablation
w2v=
avg_last=3
ctr_ramp=
until_stage=
bench_len=60
overrides=()
here=$(cd "$(dirname "$0")" && pwd)

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --mt-updates) mt_updates=$2; shift 2 ;;
    --updates) updates=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --w2v) w2v=$2; shift 2 ;;
    --avg-last) avg_last=$2; shift 2 ;;
    --ctr-ramp) ctr_ramp=$2; shift 2 ;;
    --until-stage) until_stage=$2; shift 2 ;;
    --bench-len) bench_len=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "recipes/synth/chimera.sh: $*" >&2; exit 2; }
known="chimera noctr m16 batch sentence xstnet"
for r in $rows; do [[ " $known " == *" $r "* ]] || die "unknown row $r ($known)"; done
say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
start=$SECONDS
w2v=${w2v:-exp/synth_ablation/w2v_pretrain/checkpoints/last}

if run_stage 0; then
  if [[ -f $data/en-de/spm.model && ( $w2v == random || -f $w2v/config.json ) ]]; then
    say "stage 0: $data and $w2v exist; skipped"
  else
    say "stage 0: ablation.sh stages 0-2 (SynthST, prep, wav2vec2 pre-training)"
    if [[ $w2v == random ]]; then bash "$here/ablation.sh" --stop-stage 1 --data "$data"
    else bash "$here/ablation.sh" --stop-stage 2 --data "$data" --exp "$(dirname "$(dirname "$(dirname "$w2v")")")"; fi
  fi
fi

train_one() {  # train_one ROW: one `speechxl train`, its wall time in RUN/train_seconds
  local row=$1 run=$exp/$1 t0=$SECONDS args conf=$here/conf/chimera.yaml
  [[ $w2v == random || -f $w2v/config.json ]] || die "no pre-trained wav2vec2 at $w2v (stage 0)"
  [[ $row == xstnet ]] && conf=$here/conf/xstnet_expand.yaml
  args=(--config "$conf" run_dir="$run" data.manifest_dir="$data/en-de"
        train.max_update="$updates" stages.mt_pretrain.max_update="$mt_updates")
  [[ $w2v == random ]] || args+=(model.w2v_path="$(cd "$w2v" && pwd -P)")
  [[ $row != xstnet ]] && args+=(model.contrastive_ramp_start="$mt_updates")
  [[ $row != xstnet && -n $ctr_ramp ]] && args+=(model.contrastive_ramp="$ctr_ramp")
  [[ -n $until_stage ]] && args=(--until-stage "$until_stage" "${args[@]}")  # options before the key=values
  [[ $row == noctr ]] && args+=(model.contrastive=none)
  [[ $row == m16 ]] && args+=(model.memory_slots=16)
  [[ $row == batch || $row == sentence ]] && args+=(model.contrastive="$row" model.contrastive_temperature=0)
  mkdir -p "$run"
  # wall and CPU (user + system) seconds, added up over resumed runs: on a shared machine CPU time is the compute
  local TIMEFORMAT='%U %S'
  { time OMP_NUM_THREADS=1 speechxl train "${args[@]}" "${overrides[@]}" > "$run/train.out" 2>&1; } 2> "$run/cpu.tmp" \
    || { echo "training $run failed; see $run/train.out" >&2; return 1; }
  echo $(( $(cat "$run/train_seconds" 2>/dev/null || echo 0) + SECONDS - t0 )) > "$run/train_seconds"
  awk -v before="$(cat "$run/train_cpu_seconds" 2>/dev/null || echo 0)" '{ printf "%d\n", before + $1 + $2 }' \
    "$run/cpu.tmp" > "$run/train_cpu_seconds" && rm "$run/cpu.tmp"
  echo "  $run: trained in $(( SECONDS - t0 )) s"
}

if run_stage 1; then
  say "stage 1: train $rows ($jobs at a time, one thread each; logs in $exp/<row>/train.out)"
  pids=()
  for row in $rows; do
    while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
    train_one "$row" & pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || die "a training run failed (above)"
fi

if run_stage 2; then
  say "stage 2: average the last $avg_last checkpoints, translate tst-COMMON (held-out voice), score, probe"
  for row in $rows; do
    dir=$exp/$row
    rm -rf "$dir/avg"
    speechxl average --run-dir "$dir" --last "$avg_last" --out "$dir/avg"
    OMP_NUM_THREADS=1 speechxl translate --checkpoint "$dir/avg" --manifest "$data/en-de/tst-COMMON.tsv" \
      --out "$dir/decode_tst-COMMON" --beam 5 --max-len-b 60 --max-tokens 3200000
    OMP_NUM_THREADS=1 python3 "$here/../../tools/probe_audio_use.py" --checkpoint "$dir/avg" \
      --manifest "$data/en-de/dev.tsv" > "$dir/audio_use.json"
    # does the memory align the audio and the text of one sentence? (Chimera rows)
    [[ $row == xstnet ]] || OMP_NUM_THREADS=1 python3 "$here/../../tools/probe_chimera_memory.py" \
      --checkpoint "$dir/avg" --manifest "$data/en-de/dev.tsv" > "$dir/memory_probe.json"
  done
fi

if run_stage 3; then
  say "stage 3: results -> $exp/results.md"
  declare -A names=([chimera]="Chimera (M 64, slot contrastive)" [noctr]="Chimera without contrastive loss"
                    [m16]="Chimera, memory 16" [batch]="Chimera, batch contrastive"
                    [sentence]="Chimera, ConST sentence loss" [xstnet]="XSTNet expand")
  labels=()
  for row in $rows; do labels+=("$row=${names[$row]}"); done
  python3 "$here/../../tools/results_table.py" --exp "$exp" --runs $rows --label "${labels[@]}" --label-header row \
    --columns updates time cpu dev bleu chrf audio_use memory --dev-metric st_loss --out "$exp/results.md"
fi
if run_stage 4; then
  say "stage 4: beam-5 decoding speed on tst-COMMON -> $exp/bench_decode.jsonl"
  rm -f "$exp/bench_decode.jsonl"
  for row in chimera m16; do
    [[ -d $exp/$row/avg && -d $exp/xstnet/avg ]] || continue
    OMP_NUM_THREADS=1 python3 "$here/../../tools/bench_chimera_decode.py" --chimera "$exp/$row/avg" \
      --xstnet "$exp/xstnet/avg" --manifest "$data/en-de/tst-COMMON.tsv" --max-len-b 60 --min-len "$bench_len" \
      | tee -a "$exp/bench_decode.jsonl"
  done
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

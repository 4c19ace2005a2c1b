#!/usr/bin/env bash
# COSTT's and LUT's claims in miniature on SynthST en->de (held-out test voice), equal updates per row:
#   - shrink ratio: acoustic states before / after CTC-guided shrinking vs the transcript's tokens (~1 per token)
#   - COSTT with and without shrinking: BLEU and beam-5 decode time (shorter memory)
#   - COSTT against the fbank S2T baseline (joint CTC), both on stacked/conv fbank, same width and depth
#   - LUT with and without its MSE term (teacher: COSTT's MT-step checkpoint, frozen, not in LUT's checkpoint)
#   - the transcript WER of COSTT's first pass (the text before <ast>)
#
#   bash recipes/synth/costt.sh [--stage N] [--stop-stage M] [--data DIR] [--exp DIR] [--updates 600]
#        [--train 1000] [--ext-mt 50000] [--beam 5] [--ctc-updates 900] [-- key=value ...]
#
# Stages: 0 synth  1 prep  2 COSTT steps 1-2 (MT, CTC; saves the teacher and the step-2 weights)
#         3 COSTT step 3 with and without shrinking  4 S2T baseline  5 LUT with and without MSE
#         6 decode tst-COMMON (beam 5), shrink statistics, the table ($exp/results.md)
#         7 (diagnosis) COSTT with a longer CTC step (--ctc-updates) from the same MT step, then step 3 with and
#           without shrinking; decoded, measured and added to the table by re-running stage 6
# --updates: updates per row (COSTT: 1/4 MT, 1/4 CTC, 1/2 ST; the others all ST). Run with OMP_NUM_THREADS=1
# on a shared machine; the numbers in recipes/synth/README.md were made that way.
# A variant that shares COSTT's first steps is a copy of COSTT's run directory at the end of the shared step
# (`speechxl train --until-stage`), resumed with its own override (e.g. model.shrink=none): it continues exactly
# as COSTT does, and its table row counts every step it went through. EXP/<run>/train_seconds adds up the wall
# time of the run's steps (a copy starts from the time of the steps it shares).
set -euo pipefail

stage=0
stop_stage=6
ctc_updates=900
data=data/synth_costt
exp=exp/synth_costt
updates=600
n_train=1000
n_ext_mt=50000
beam=5
vocab_size=500
extra=()
here=$(cd "$(dirname "$0")" && pwd)

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --updates) updates=$2; shift 2 ;;
    --train) n_train=$2; shift 2 ;;
    --ext-mt) n_ext_mt=$2; shift 2 ;;
    --beam) beam=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    --ctc-updates) ctc_updates=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
timed() {  # timed RUN_DIR CMD...: run CMD, add its wall seconds to RUN_DIR/train_seconds
  local run=$1 t=$SECONDS; shift
  "$@"
  echo $(( $(cat "$run/train_seconds" 2>/dev/null || echo 0) + SECONDS - t )) > "$run/train_seconds"
}
fork() { rm -rf "$2"; cp -a "$1" "$2"; }  # fork RUN_DIR COPY: a variant continues from RUN_DIR's last checkpoint
prepared=$data/en-de
quarter=$(( updates / 4 ))
half=$(( updates - 2 * quarter ))
common=(data.manifest_dir="$prepared")
mkdir -p "$exp"

if run_stage 0; then
  say "stage 0: synthesise SynthST ($n_train train utterances, $n_ext_mt external MT pairs)"
  if [[ -f $data/raw/synth_info.json ]]; then
    echo "$data/raw already holds a SynthST corpus"
  else
    rm -rf "$data/raw"
    speechxl synth --out "$data/raw" --layout mustc --langs de --train "$n_train" --dev 100 --test 300 \
      --ext-mt "$n_ext_mt" --seed 1
  fi
fi

if run_stage 1; then
  say "stage 1: manifests + SentencePiece ($vocab_size) + external MT"
  speechxl prep mustc --root "$data/raw" --lang de --out "$prepared" --vocab-size "$vocab_size" \
    --ext-mt "$data/raw/ext_mt"
fi

costt_args=(--config "$here/conf/costt.yaml" run_dir="$exp/costt" "${common[@]}"
            stages.mt_pretrain.max_update="$quarter" stages.ctc.max_update="$quarter" stages.st.max_update="$half"
            "${extra[@]}")

if run_stage 2; then
  say "stage 2: COSTT step 1 (MT, $quarter updates) and step 2 (CTC, $quarter updates)"
  rm -rf "$exp/costt"  # a fresh chain: the variants below are copies of it
  timed "$exp/costt" speechxl train --until-stage mt_pretrain "${costt_args[@]}"
  rm -rf "$exp/teacher"  # the MT-trained semantic encoder: LUT's frozen text encoder
  cp -rL "$exp/costt/checkpoints/last" "$exp/teacher"
  fork "$exp/costt" "$exp/costt_mt"  # stage 7 continues from here
  timed "$exp/costt" speechxl train --until-stage ctc "${costt_args[@]}"
  # shrinking has no weights and acts only in step 3: the variant without it shares steps 1-2
  fork "$exp/costt" "$exp/costt_noshrink"
fi

if run_stage 3; then
  say "stage 3: COSTT step 3 (ST, $half updates) with shrinking, and without it from the same step-2 run"
  timed "$exp/costt" speechxl train "${costt_args[@]}"
  timed "$exp/costt_noshrink" speechxl train "${costt_args[@]}" run_dir="$exp/costt_noshrink" model.shrink=none
fi

if run_stage 4; then
  say "stage 4: fbank S2T baseline with joint CTC ($updates updates, same width/depth as COSTT)"
  timed "$exp/s2t" speechxl train --config "$here/conf/s2t.yaml" run_dir="$exp/s2t" \
    "${common[@]}" train.max_update="$updates" model.dim=128 model.encoder_layers=5 model.decoder_layers=2 \
    model.encoder_ffn_dim=512 model.decoder_ffn_dim=512 model.conv_channels=256 "model.conv_kernel_sizes=[5, 5]" \
    data.specaugment=costt data.max_tokens=3000 data.max_sentences=32 train.warmup_updates=100 \
    train.save_every=0 train.validate_every=0 train.valid_beam=1 train.valid_max_sentences=50 train.keep_last=1 \
    "${extra[@]}"
fi

if run_stage 5; then
  say "stage 5: LUT with and without the MSE term ($updates updates each)"
  timed "$exp/lut" speechxl train --config "$here/conf/lut.yaml" run_dir="$exp/lut" \
    "${common[@]}" train.max_update="$updates" model.teacher_path="$exp/teacher" "${extra[@]}"
  timed "$exp/lut_nomse" speechxl train --config "$here/conf/lut.yaml" run_dir="$exp/lut_nomse" \
    "${common[@]}" train.max_update="$updates" model.mse_weight=0 "${extra[@]}"
fi

if run_stage 6; then
  say "stage 6: decode tst-COMMON (beam $beam), shrink statistics, table"
  for run in costt costt_noshrink s2t lut lut_nomse costt_longctc costt_longctc_noshrink; do
    [[ -d $exp/$run/checkpoints/last ]] || continue
    speechxl translate --checkpoint "$exp/$run/checkpoints/last" --manifest "$prepared/tst-COMMON.tsv" \
      --out "$exp/$run/decode" --beam "$beam" --max-tokens 20000 --max-len-b 150 >/dev/null
  done
  for run in costt costt_noshrink costt_longctc costt_longctc_noshrink; do
    [[ -d $exp/$run/checkpoints/last ]] || continue
    python3 "$here/../../tools/shrink_stats.py" "$exp/$run/checkpoints/last" "$prepared/tst-COMMON.tsv" \
      --out "$exp/$run/shrink.json" >/dev/null
  done
  runs=() labels=()
  for row in "costt=COSTT (shrink: first)" "costt_noshrink=COSTT without shrinking" "s2t=S2T fbank + joint CTC" \
      "lut=LUT (CTC + MSE + CE)" "lut_nomse=LUT without MSE" "costt_longctc=COSTT, long CTC step (stage 7)" \
      "costt_longctc_noshrink=COSTT, long CTC step, no shrinking"; do
    [[ -f $exp/${row%%=*}/decode/score.json ]] && runs+=("${row%%=*}") && labels+=("$row")
  done
  python3 "$here/../../tools/results_table.py" --exp "$exp" --runs "${runs[@]}" --label "${labels[@]}" \
    --label-header model --decode decode --columns updates time bleu chrf wer decode_s shrink --out "$exp/results.md"
fi

if run_stage 7; then
  say "stage 7: diagnosis: COSTT with a $ctc_updates-update CTC step from the same MT step, then step 3 ($half)"
  long_args=("${costt_args[@]}" run_dir="$exp/costt_longctc" stages.ctc.max_update="$ctc_updates")
  fork "$exp/costt_mt" "$exp/costt_longctc"
  timed "$exp/costt_longctc" speechxl train --until-stage ctc "${long_args[@]}"
  fork "$exp/costt_longctc" "$exp/costt_longctc_noshrink"
  timed "$exp/costt_longctc" speechxl train "${long_args[@]}"
  timed "$exp/costt_longctc_noshrink" speechxl train "${long_args[@]}" run_dir="$exp/costt_longctc_noshrink" \
    model.shrink=none
  echo "re-run stage 6 (--stage 6 --stop-stage 6) to decode these runs and add them to the table"
fi

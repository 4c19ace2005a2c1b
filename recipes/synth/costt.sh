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
timed() { local t=$SECONDS; "$@"; echo "$(( SECONDS - t ))" > "$timing_file"; }
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
snapshot() { rm -rf "$2"; cp -rL "$1/checkpoints/last" "$2"; }

if run_stage 2; then
  say "stage 2: COSTT step 1 (MT, $quarter updates) and step 2 (CTC, $quarter updates)"
  timing_file=$exp/time_costt_step1.txt timed speechxl train --until-stage 1 "${costt_args[@]}"
  snapshot "$exp/costt" "$exp/teacher"  # the MT-trained semantic encoder: LUT's frozen text encoder
  timing_file=$exp/time_costt_step2.txt timed speechxl train --until-stage 2 "${costt_args[@]}"
  snapshot "$exp/costt" "$exp/costt_after_ctc"
fi

if run_stage 3; then
  say "stage 3: COSTT step 3 (ST, $half updates) with shrinking, and without it from the same step-2 weights"
  timing_file=$exp/time_costt_step3.txt timed speechxl train "${costt_args[@]}"
  # the same step 3 alone (steps 1-2 are identical: shrinking has no weights and only acts in step 3)
  python3 - "$here/conf/costt.yaml" "$exp/costt_step3.yaml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["stages"] = config["stages"][-1:]
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
  timing_file=$exp/time_costt_noshrink.txt timed speechxl train --config "$exp/costt_step3.yaml" \
    run_dir="$exp/costt_noshrink" "${common[@]}" model.shrink=none train.init_from="$exp/costt_after_ctc" \
    stages.st.max_update="$half" "${extra[@]}"
fi

if run_stage 4; then
  say "stage 4: fbank S2T baseline with joint CTC ($updates updates, same width/depth as COSTT)"
  timing_file=$exp/time_s2t.txt timed speechxl train --config "$here/conf/s2t.yaml" run_dir="$exp/s2t" \
    "${common[@]}" train.max_update="$updates" model.dim=128 model.encoder_layers=5 model.decoder_layers=2 \
    model.encoder_ffn_dim=512 model.decoder_ffn_dim=512 model.conv_channels=256 "model.conv_kernel_sizes=[5, 5]" \
    data.specaugment=costt data.max_tokens=3000 data.max_sentences=32 train.warmup_updates=100 \
    train.save_every=0 train.validate_every=0 train.valid_beam=1 train.valid_max_sentences=50 train.keep_last=1 \
    "${extra[@]}"
fi

if run_stage 5; then
  say "stage 5: LUT with and without the MSE term ($updates updates each)"
  timing_file=$exp/time_lut.txt timed speechxl train --config "$here/conf/lut.yaml" run_dir="$exp/lut" \
    "${common[@]}" train.max_update="$updates" model.teacher_path="$exp/teacher" "${extra[@]}"
  timing_file=$exp/time_lut_nomse.txt timed speechxl train --config "$here/conf/lut.yaml" run_dir="$exp/lut_nomse" \
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
  python3 - "$exp" <<'PY'
import json, sys
from pathlib import Path
exp = Path(sys.argv[1])
def seconds(*names):
    return sum(int((exp / f"time_{n}.txt").read_text()) for n in names if (exp / f"time_{n}.txt").is_file())
rows = [("COSTT (shrink: first)", "costt", ("costt_step1", "costt_step2", "costt_step3")),
        ("COSTT without shrinking", "costt_noshrink", ("costt_step1", "costt_step2", "costt_noshrink")),
        ("S2T fbank + joint CTC", "s2t", ("s2t",)), ("LUT (CTC + MSE + CE)", "lut", ("lut",)),
        ("LUT without MSE", "lut_nomse", ("lut_nomse",)),
        ("COSTT, long CTC step (stage 7)", "costt_longctc", ("costt_step1", "longctc_ctc", "longctc_st")),
        ("COSTT, long CTC step, no shrinking", "costt_longctc_noshrink",
         ("costt_step1", "longctc_ctc", "longctc_noshrink"))]
lines = ["| model | BLEU | chrF | transcript WER | decode s (beam 5) | train s | states/token after shrink |",
         "|---|---|---|---|---|---|---|"]
for label, run, times in rows:
    score_file = exp / run / "decode" / "score.json"
    if not score_file.is_file():
        continue
    s = json.loads(score_file.read_text())
    wer = s.get("transcript", {}).get("wer")
    shrink = exp / run / "shrink.json"
    ratio = json.loads(shrink.read_text())["states_per_token_after"] if shrink.is_file() else ""
    lines.append(f"| {label} | {s['bleu']:.2f} | {s['chrf']:.1f} | {'' if wer is None else f'{wer:.1f}'} | "
                 f"{s['decode_seconds']} | {seconds(*times)} | {ratio} |")
for run in ("costt", "costt_noshrink", "costt_longctc", "costt_longctc_noshrink"):
    if (exp / run / "shrink.json").is_file():
        lines.append(f"\n{run} shrink statistics: {(exp / run / 'shrink.json').read_text().strip()}")
(exp / "results.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
fi

if run_stage 7; then
  say "stage 7: diagnosis: COSTT with a $ctc_updates-update CTC step from the same MT step, then step 3 ($half)"
  python3 - "$here/conf/costt.yaml" "$exp/costt_ctc_st.yaml" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["stages"] = config["stages"][1:]
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
PY
  long_args=(--config "$exp/costt_ctc_st.yaml" run_dir="$exp/costt_longctc" "${common[@]}"
             train.init_from="$exp/teacher" stages.ctc.max_update="$ctc_updates" stages.st.max_update="$half"
             "${extra[@]}")
  timing_file=$exp/time_longctc_ctc.txt timed speechxl train --until-stage 1 "${long_args[@]}"
  snapshot "$exp/costt_longctc" "$exp/costt_longctc_after_ctc"
  timing_file=$exp/time_longctc_st.txt timed speechxl train "${long_args[@]}"
  timing_file=$exp/time_longctc_noshrink.txt timed speechxl train --config "$exp/costt_step3.yaml" \
    run_dir="$exp/costt_longctc_noshrink" "${common[@]}" model.shrink=none \
    train.init_from="$exp/costt_longctc_after_ctc" stages.st.max_update="$half" "${extra[@]}"
  echo "re-run stage 6 (--stage 6 --stop-stage 6) to decode these runs and add them to the table"
fi

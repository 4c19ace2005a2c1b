#!/usr/bin/env bash
# FAT-MLM / FAT-ST's claim in miniature on SynthST en->de (the XSTNet ablation's data: 1,000 spoken triples,
# 50,000 external MT pairs, 2,999 unlabelled utterances; test voice held out), equal fine-tuning updates per row:
#   fat_mlm   FAT-ST whose encoder, token embedding and decoder (copies of encoder layers) come from FAT-MLM,
#             pre-trained on the unlabelled speech + the triples' speech (ℓ_s), the triples (ℓ_{s,x,y}) and the
#             external bitext (TLM)
#   fat_rand  the same FAT-ST from random weights
#   s2t       the fbank S2T baseline (joint CTC 0.3) of costt.sh, same width and depth
#
#   bash recipes/synth/fat.sh [--stage N] [--stop-stage M] [--data DIR] [--exp DIR] [--mlm-updates 800]
#        [--jobs 2] [--rows "fat_mlm fat_rand"] [--s2t-from DIR] [-- key=value ...]
#
# Stages: 0 the ablation's data (recipes/synth/ablation.sh stages 0-1 when missing) -> DATA/en-de with
#           train_fat.tsv = the triples + the unlabelled utterances with their texts emptied (ids prefixed)
#         1 FAT-MLM pre-training (conf/fat_mlm.yaml; best checkpoint by the dev masked loss)
#         2 FAT-ST from FAT-MLM and from random weights (conf/fat_st.yaml: 400 updates L_ST + L_MT, 200 ST);
#           --rows picks which, --jobs how many at a time
#         3 the S2T baseline, 600 updates (costt.sh's stage 4 settings); --s2t-from DIR takes an existing run of
#           it instead (e.g. exp/synth_costt/s2t: same data, same command)
#         4 translate tst-COMMON (beam 5, last checkpoint), audio-use probe on dev, the reconstruction PNG, and the
#           FAT-MLM fusion probe (tools/probe_fat_mlm.py: masked-token CE with own / another's / no speech)
#         5 the table: EXP/results.md
#         6 (diagnosis, run with --stage 6 --stop-stage 6, then --stage 4 --stop-stage 5 again) FAT-MLM with 50% text
#           masking (does more masking make the text predictions use the speech?) and the same FAT-ST from it
# `-- key=value` overrides go to every FAT-ST and S2T run (e.g. train.max_update=5 for a smoke test).
set -euo pipefail

stage=0
stop_stage=5
data=data/fat_synth
exp=exp/fat_synth
ablation_data=data/synth_ablation
mlm_updates=800
jobs=2
st_rows="fat_mlm fat_rand"
s2t_from=
extra=()
here=$(cd "$(dirname "$0")" && pwd)

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --ablation-data) ablation_data=$2; shift 2 ;;
    --mlm-updates) mlm_updates=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --rows) st_rows=$2; shift 2 ;;
    --s2t-from) s2t_from=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
timed() { local out=$1 t=$SECONDS; shift; "$@"; echo $(( SECONDS - t )) > "$out"; }
prepared=$data/en-de
mlm=$exp/mlm
mkdir -p "$exp"
start=$SECONDS

if run_stage 0; then
  say "stage 0: the XSTNet ablation's SynthST data -> $prepared (+ train_fat.tsv with the unlabelled speech)"
  if [[ ! -f $ablation_data/en-de/train.tsv || ! -f $ablation_data/unlabelled/train.tsv ]]; then
    bash "$here/ablation.sh" --stop-stage 1 --data "$ablation_data" --unlabelled 3000
  fi
  mkdir -p "$prepared"
  source_dir=$(cd "$ablation_data/en-de" && pwd -P)
  for file in train.tsv dev.tsv tst-COMMON.tsv ext_mt.tsv spm.model spm.vocab prep_report.json; do
    ln -sfn "$source_dir/$file" "$prepared/$file"
  done
  # unlabelled: no transcript, no translation (columns: id audio n_frames tgt_text speaker src_text ...); the
  # manifests hold absolute audio paths, so the rows move as they are
  { cat "$source_dir/train.tsv"
    awk -F'\t' 'BEGIN { OFS = "\t" } NR > 1 { $1 = "unlabelled_" $1; $4 = ""; $6 = ""; print }' \
      "$ablation_data/unlabelled/train.tsv"
  } > "$prepared/train_fat.tsv"
  echo "$prepared/train_fat.tsv: $(( $(wc -l < "$prepared/train_fat.tsv") - 1 )) rows"
fi

if run_stage 1; then
  say "stage 1: FAT-MLM pre-training ($mlm_updates updates) -> $mlm"
  timed "$exp/time_mlm.txt" speechxl train --config "$here/conf/fat_mlm.yaml" run_dir="$mlm" \
    data.manifest_dir="$prepared" stages.fat_mlm.max_update="$mlm_updates"
fi

train_st() {  # train_st NAME [key=value ...]: one FAT-ST row, its wall seconds in RUN/train_seconds
  local name=$1 run=$exp/$1 t0=$SECONDS; shift
  mkdir -p "$run"
  speechxl train --config "$here/conf/fat_st.yaml" run_dir="$run" data.manifest_dir="$prepared" "$@" \
    "${extra[@]}" > "$run/train.out" 2>&1 || { echo "training $run failed; see $run/train.out" >&2; return 1; }
  echo $(( SECONDS - t0 )) > "$run/train_seconds"
  echo "  $run: trained in $(( SECONDS - t0 )) s"
}

if run_stage 2; then
  say "stage 2: FAT-ST rows $st_rows ($jobs at a time): from FAT-MLM ($mlm/checkpoints/best), from random weights"
  pids=()
  for row in $st_rows; do
    while [[ $(jobs -rp | wc -l) -ge $jobs ]]; do wait -n || true; done
    case $row in
      fat_mlm)
        [[ -d $mlm/checkpoints/best ]] || { echo "no FAT-MLM checkpoint at $mlm/checkpoints/best (stage 1)" >&2; exit 2; }
        train_st fat_mlm model.mlm_checkpoint="$(cd "$mlm/checkpoints/best" && pwd -P)" & pids+=($!) ;;
      fat_rand) train_st fat_rand & pids+=($!) ;;
      *) echo "unknown row $row (fat_mlm, fat_rand)" >&2; exit 2 ;;
    esac
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || { echo "a FAT-ST run failed (above)" >&2; exit 1; }
fi

if run_stage 3; then
  say "stage 3: fbank S2T baseline with joint CTC (600 updates)"
  if [[ -n $s2t_from ]]; then
    rm -rf "$exp/s2t" && mkdir -p "$exp/s2t/checkpoints"
    cp -rL "$s2t_from/checkpoints/last" "$exp/s2t/checkpoints/last"
    cp "$s2t_from/config.yaml" "$s2t_from/train_log.jsonl" "$exp/s2t/"
    times=$(dirname "$s2t_from")/time_$(basename "$s2t_from").txt  # costt.sh's timing file
    [[ -f $times ]] && cp "$times" "$exp/s2t/train_seconds"
    echo "copied from $s2t_from"
  else
    t0=$SECONDS
    speechxl train --config "$here/conf/s2t.yaml" run_dir="$exp/s2t" data.manifest_dir="$prepared" \
      train.max_update=600 model.dim=128 model.encoder_layers=5 model.decoder_layers=2 model.encoder_ffn_dim=512 \
      model.decoder_ffn_dim=512 model.conv_channels=256 "model.conv_kernel_sizes=[5, 5]" data.specaugment=costt \
      data.max_tokens=3000 data.max_sentences=32 train.warmup_updates=100 train.save_every=0 \
      train.validate_every=0 train.valid_beam=1 train.valid_max_sentences=50 train.keep_last=1 "${extra[@]}"
    echo $(( SECONDS - t0 )) > "$exp/s2t/train_seconds"
  fi
fi

rows=(fat_mlm fat_rand s2t)
[[ -f $exp/fat_mlm50/train_seconds ]] && rows+=(fat_mlm50)  # stage 6's diagnosis row, once it exists
if run_stage 4; then
  say "stage 4: translate tst-COMMON (held-out voice, beam 5), audio-use probe (dev), reconstruction PNG"
  for row in "${rows[@]}"; do
    dir=$exp/$row
    speechxl translate --checkpoint "$dir/checkpoints/last" --manifest "$prepared/tst-COMMON.tsv" \
      --out "$dir/decode_tst-COMMON" --beam 5 --max-len-b 60
    python3 "$here/../../tools/probe_audio_use.py" --checkpoint "$dir/checkpoints/last" \
      --manifest "$prepared/dev.tsv" > "$dir/audio_use.json"
  done
  python3 "$here/../../tools/plot_fat_mlm.py" --checkpoint "$mlm/checkpoints/best" --manifest "$prepared/dev.tsv" \
    --out "$exp/fat_mlm_reconstruction.png" || echo "(no PNG: see the message above)"
  # does FAT-MLM fuse the modalities? masked-token CE with own / another's / no speech (tools/probe_fat_mlm.py)
  for dir in "$mlm" "$exp/mlm_mask50"; do
    [[ -d $dir/checkpoints/best ]] || continue
    python3 "$here/../../tools/probe_fat_mlm.py" --checkpoint "$dir/checkpoints/best" --manifest "$prepared/dev.tsv" \
      | tee "$dir/fusion_probe.json"
  done
fi

if run_stage 5; then
  say "stage 5: results -> $exp/results.md"
  python3 "$here/../../tools/results_table.py" --exp "$exp" --runs "${rows[@]}" \
    --label "fat_mlm=FAT-ST from FAT-MLM" "fat_rand=FAT-ST from random weights" "s2t=S2T fbank + joint CTC 0.3" \
    "fat_mlm50=FAT-ST from FAT-MLM, 50% text masking (diagnosis)" \
    --label-header "model" --columns updates time dev bleu chrf audio_use --dev-metric st_loss --out "$exp/results.md"
  cat "$exp/results.md"
fi
if run_stage 6; then  # not in the default run (--stop-stage 5): re-run stages 4-5 afterwards to add its row
  say "stage 6 (diagnosis): FAT-MLM with 50% text masking ($mlm_updates updates), FAT-ST from it"
  timed "$exp/time_mlm_mask50.txt" speechxl train --config "$here/conf/fat_mlm.yaml" run_dir="$exp/mlm_mask50" \
    data.manifest_dir="$prepared" stages.fat_mlm.max_update="$mlm_updates" model.text_mask_ratio=0.5
  train_st fat_mlm50 model.mlm_checkpoint="$(cd "$exp/mlm_mask50/checkpoints/best" && pwd -P)"
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

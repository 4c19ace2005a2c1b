# Stages 0-6 of the XSTNet recipes; sourced by recipes/mustc/run.sh and recipes/covost2/run.sh after they
# parse their flags. They set: stage stop_stage method conf data exp w2v ext_mt vocab_size avg_last max_len_b amp
# overrides (array), optional fbank (costt, lut, fat: no wav2vec2), optional mlm_conf + mlm_exp (FAT-MLM
# pre-training before stage 1's run; its best checkpoint starts the method's model),
# optional avg_around_best (average around the best instead of the last) and lenpen,
# prep (array: `speechxl prep <corpus> ...` without --out/--vocab-size/--ext-mt),
# and test_split.

say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
die() { echo "$0: $*" >&2; exit 2; }
show_and_run() { printf '+'; printf ' %q' "$@"; printf '\n'; "$@"; }  # the command, to re-run it by hand

[[ -f $conf ]] || die "config $conf not found"
if run_stage 0 && [[ -z $root ]]; then die "--root (the corpus root) is required for stage 0"; fi
if [[ -z $w2v && -z ${fbank:-} ]] && (run_stage 1 || run_stage 2); then
  echo "$0: no --w2v: the wav2vec2 encoder starts from random weights (fine for a smoke test only)" >&2
fi

# How many progressive stages the config lists (0 without a `stages:` section). Counting `- name:` lines is
# enough for the recipe configs, which write their stages as block lists; `speechxl train` parses them for real.
# Stage 1 needs two or more: with one stage, `--until-stage 1` would be the whole run, not MT pre-training.
count_stages() {
  if grep -q '^stages:' "$conf"; then grep -c '^ *- name:' "$conf" || true; else echo 0; fi
}

train_args() {  # train_args [CONF RUN_DIR]: default the method's config and $exp
  local precision=$amp config=${1:-$conf} run=${2:-$exp}
  if [[ $precision == auto ]]; then
    precision=$(python3 -c 'import torch; print("bf16" if torch.cuda.is_available() else "none")')
  fi
  args=(--config "$config" run_dir="$run" data.manifest_dir="$data" train.amp="$precision")
  # fbank models (costt, lut, fat) have no wav2vec2 to load
  [[ -n $w2v && -z ${fbank:-} ]] && args+=(model.w2v_path="$(cd "$w2v" && pwd)")
  # FAT-ST starts from FAT-MLM's best checkpoint (by the dev masked loss)
  [[ -n ${mlm_exp:-} && $run == "$exp" ]] && args+=(model.mlm_checkpoint="$(cd "$mlm_exp/checkpoints/best" && pwd -P)")
  args+=("${overrides[@]}")
}

# LUT's frozen text encoder is a speechxl MT checkpoint the user names (it is not trained by this recipe)
if [[ $method == lut ]] && (run_stage 1 || run_stage 2) && [[ " ${overrides[*]} " != *" model.teacher_path="* ]]; then
  die "--method lut needs its text encoder: -- model.teacher_path=DIR (a speechxl MT checkpoint, e.g. COSTT's MT step)"
fi

# FAT-ST's stages start from FAT-MLM's best checkpoint, which stage 1 makes
if [[ -n ${mlm_exp:-} ]] && ! run_stage 1 && run_stage 2 && [[ ! -d $mlm_exp/checkpoints/best ]]; then
  die "--method $method needs FAT-MLM's checkpoint $mlm_exp/checkpoints/best: run stage 1 first"
fi

start=$SECONDS
decode_dir=$exp/decode_$test_split

if run_stage 0; then
  say "stage 0: manifests + SentencePiece ($vocab_size) -> $data"
  ext_args=()
  [[ -n $ext_mt ]] && ext_args=(--ext-mt "$ext_mt")
  "${prep[@]}" --out "$data" --vocab-size "$vocab_size" "${ext_args[@]}"
fi

if run_stage 1 && [[ -n ${mlm_conf:-} ]]; then  # FAT: pre-train FAT-MLM first (optional mlm_conf, mlm_exp)
  say "stage 1: FAT-MLM pre-training of $mlm_exp ($mlm_conf)"
  train_args "$mlm_conf" "$mlm_exp"
  show_and_run speechxl train "${args[@]}"
fi

if run_stage 1; then
  if [[ $(count_stages) -lt 2 ]]; then
    say "stage 1: $conf has no MT pre-training stage before the multitask one; skipped"
  else
    say "stage 1: MT pre-training (the config's first stage) of $exp ($conf)"
    train_args
    show_and_run speechxl train --until-stage 1 "${args[@]}"
  fi
fi

if run_stage 2; then
  say "stage 2: multitask ST + ASR + MT, resuming $exp"
  train_args
  show_and_run speechxl train "${args[@]}"
fi

if run_stage 3; then
  which=(--last "$avg_last")  # chimera: the N checkpoints around the best by the run's best_metric
  [[ -n ${avg_around_best:-} ]] && which=(--best-around "$avg_last")
  say "stage 3: average ${which[*]} checkpoints -> $exp/avg"
  rm -rf "$exp/avg"
  speechxl average --run-dir "$exp" "${which[@]}" --out "$exp/avg"
fi

if run_stage 4; then
  say "stage 4: decode $test_split (beam 10, lenpen ${lenpen:-1}, forced target-language tag)"
  # --max-tokens counts wave samples for wav2vec2 models: 200 s of audio per batch
  speechxl translate --checkpoint "$exp/avg" --manifest "$data/$test_split.tsv" --out "$decode_dir" \
    --beam 10 --lenpen "${lenpen:-1}" --max-len-b "$max_len_b" --max-tokens 3200000
fi

if run_stage 5; then
  say "stage 5: case-sensitive detokenized sacreBLEU on $test_split -> $exp/score.json"
  speechxl score --hyp "$decode_dir/hyp.txt" --ref "$decode_dir/ref.txt" --out "$exp/score.json"
fi

if run_stage 6; then
  # the decode's score.json names corpus, version, split and direction: it lands in the comparable table
  say "stage 6: $decode_dir/score.json beside the published numbers; $exp/leaderboard.png, $exp/curves.png"
  # the PNGs need matplotlib (pip install 'speechxl[plots]'); without it the tables are still printed
  speechxl leaderboard "$decode_dir/score.json" --png "$exp/leaderboard.png" || speechxl leaderboard "$decode_dir/score.json"
  speechxl plot "$exp" --out "$exp/curves.png" || echo "(no curves PNG: see the message above)"
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

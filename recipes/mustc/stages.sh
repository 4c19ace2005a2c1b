# Stages 0-6 of the XSTNet recipes; sourced by recipes/mustc/run.sh and recipes/covost2/run.sh after they
# parse their flags. They set: stage stop_stage method conf data exp w2v ext_mt vocab_size avg_last max_len_b amp
# overrides (array), prep (array: `speechxl prep <corpus> ...` without --out/--vocab-size/--ext-mt),
# test_split, corpus (its name in the leaderboard row) and pair (e.g. en-de).

say() { printf '\n=== %s\n' "$*"; }
run_stage() { [[ $stage -le $1 && $stop_stage -ge $1 ]]; }
die() { echo "$0: $*" >&2; exit 2; }
show_and_run() { printf '+'; printf ' %q' "$@"; printf '\n'; "$@"; }  # the command, to re-run it by hand

[[ -f $conf ]] || die "config $conf not found"
if run_stage 0 && [[ -z $root ]]; then die "--root (the corpus root) is required for stage 0"; fi
if [[ -z $w2v ]] && (run_stage 1 || run_stage 2); then
  echo "$0: no --w2v: the wav2vec2 encoder starts from random weights (fine for a smoke test only)" >&2
fi

# The update at which the config's first stage (MT pre-training) ends, with the overrides applied and capped
# by train.max_update; 0 when the config has fewer than two stages.
first_stage_end() {
  python3 - "$conf" "${overrides[@]}" <<'PY'
import sys

from speechxl.config import load_config
from speechxl.train.stages import parse_stages, stage_starts

cfg = load_config(sys.argv[1], sys.argv[2:])
stages = parse_stages(cfg.stages, sys.argv[1]) if len(cfg.stages) > 1 else []
end = stage_starts(stages)[1] if stages else 0
print(min(end, cfg.train.max_update) if end and cfg.train.max_update > 0 else end)
PY
}

train_args() {
  local precision=$amp
  if [[ $precision == auto ]]; then
    precision=$(python3 -c 'import torch; print("bf16" if torch.cuda.is_available() else "none")')
  fi
  args=(--config "$conf" run_dir="$exp" data.manifest_dir="$data" train.amp="$precision")
  [[ -n $w2v ]] && args+=(model.w2v_path="$(cd "$w2v" && pwd)")
  args+=("${overrides[@]}")
}

start=$SECONDS
decode_dir=$exp/decode_$test_split

if run_stage 0; then
  say "stage 0: manifests + SentencePiece ($vocab_size) -> $data"
  ext_args=()
  [[ -n $ext_mt ]] && ext_args=(--ext-mt "$ext_mt")
  "${prep[@]}" --out "$data" --vocab-size "$vocab_size" "${ext_args[@]}"
fi

if run_stage 1; then
  mt_end=$(first_stage_end)
  if [[ $mt_end -eq 0 ]]; then
    say "stage 1: $conf has no MT pre-training stage before the multitask one; skipped"
  else
    say "stage 1: MT pre-training, updates 1-$mt_end of $exp ($conf)"
    train_args
    show_and_run speechxl train "${args[@]}" train.max_update="$mt_end"
  fi
fi

if run_stage 2; then
  say "stage 2: multitask ST + ASR + MT, resuming $exp"
  train_args
  show_and_run speechxl train "${args[@]}"
fi

if run_stage 3; then
  say "stage 3: average the last $avg_last checkpoints -> $exp/avg"
  rm -rf "$exp/avg"
  speechxl average --run-dir "$exp" --last "$avg_last" --out "$exp/avg"
fi

if run_stage 4; then
  say "stage 4: decode $test_split (beam 10, lenpen 1, forced target-language tag)"
  # --max-tokens counts wave samples for wav2vec2 models: 200 s of audio per batch
  speechxl translate --checkpoint "$exp/avg" --manifest "$data/$test_split.tsv" --out "$decode_dir" \
    --beam 10 --lenpen 1 --max-len-b "$max_len_b" --max-tokens 3200000
fi

if run_stage 5; then
  say "stage 5: case-sensitive detokenized sacreBLEU on $test_split -> $exp/score.json"
  speechxl score --hyp "$decode_dir/hyp.txt" --ref "$decode_dir/ref.txt" --out "$exp/score.json"
fi

if run_stage 6; then
  say "stage 6: leaderboard row -> $exp/leaderboard.jsonl"
  python3 - "$exp" "speechxl $(basename "$conf" .yaml)" "$corpus" "$pair" <<'PY'
import json
import sys
from pathlib import Path

exp, system, corpus, pair = sys.argv[1:]
score = json.loads((Path(exp) / "score.json").read_text(encoding="utf-8"))
row = {"system": system, "corpus": corpus, "pair": pair, "bleu": score["bleu"], "signature": score["signature"],
       "exp": exp}
with (Path(exp) / "leaderboard.jsonl").open("a", encoding="utf-8") as f:
    f.write(json.dumps(row) + "\n")
print(json.dumps(row))
PY
fi
say "done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"

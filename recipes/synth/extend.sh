#!/usr/bin/env bash
# Extending a trained En->De SynthST model to a new target language cheaply (issue 14; Gheini et al. 2021):
# children of one parent trained with `full`, `xattn`, `lna`, `adapters`, `lora`, from scratch, and `xattn`
# with re-initialised cross-attention, at equal updates; each decoded on the held-out voice (tst-COMMON) in the
# new language and, for forgetting, in German. Children are delta checkpoints of the parent. New pieces' rows
# start as the mean of the parent's rows that spell them. Further variants: `xattn_random` (xattn, new rows
# drawn at random), `xattn_emb` (xattn + every embedding row, not just the appended ones: the paper's new
# language has a vocabulary of its own, all of it trained).
#
#   bash recipes/synth/extend.sh [--stage N] [--stop-stage M] [--lang fr] [--parent exp/demo/avg]
#        [--updates 250] [--variants "xattn full ..."] [--test-n N] [--de-n N] [--exp exp/peft_synth]
#   bash recipes/synth/extend.sh --stage 4 --stop-stage 5 [--multi-updates 750] [--multi-variants "adapters full"]
#
# Stages: 0 prep + extend the parent's vocabulary  1 decode the parent (De)  2 train + average + decode each
# variant  3 table. Needs data/demo/raw (recipes/synth/run.sh with --data data/demo, which holds en-fr/en-es too).
# Stages 4-5 (issue 14, deliverable 6): one multilingual En->{De,Fr,Es} model, the parent's body shared and
# language adapters, trained on mixed De/Fr/Es batches for --multi-updates (default 3 x --updates), against
# three bilingual models with --updates each (the same total updates from the same parent): the full
# children of stage 2 (Fr, Es) plus a full En->De continuation, and the three bilingual adapter children.
set -euo pipefail

stage=0
stop_stage=3
lang=fr
parent=exp/demo/avg
raw=data/demo/raw
de_test=data/demo/en-de/tst-COMMON.tsv
updates=250
variants="xattn full lna adapters lora scratch xattn_reinit"
multi_updates=0  # 0: 3 x updates
multi_variants="adapters full"  # the multilingual models: shared body frozen / trained too
bilingual_variants="full adapters"  # the bilingual En->De models of stage 4 (Fr, Es: stage 2's children)
exp=exp/peft_synth
pieces=300
test_n=0  # > 0: decode only the first N test utterances of the new direction, for a quick look
de_n=0    # > 0: the forgetting check (En->De) on the first N test utterances only

while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --lang) lang=$2; shift 2 ;;
    --parent) parent=$2; shift 2 ;;
    --raw) raw=$2; shift 2 ;;
    --de-test) de_test=$2; shift 2 ;;
    --updates) updates=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --pieces) pieces=$2; shift 2 ;;
    --test-n) test_n=$2; shift 2 ;;
    --de-n) de_n=$2; shift 2 ;;
    --multi-updates) multi_updates=$2; shift 2 ;;
    --multi-variants) multi_variants=$2; shift 2 ;;
    --bilingual-variants) bilingual_variants=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n=== %s\n' "$*"; }
data=data/peft_$lang

if [[ $stage -le 0 && $stop_stage -ge 0 ]]; then
  say "stage 0: prep MuST-C en-$lang, then append <$lang> and $lang pieces to the parent's vocabulary"
  speechxl prep mustc --root "$raw" --lang "$lang" --out "$data"
  rm -f "$data/spm.vocab"  # prep's own vocabulary is replaced by the parent's, extended
  speechxl extend-vocab --parent "$parent/spm.model" --manifest "$data/train.tsv" --lang "$lang" \
    --pieces "$pieces" --out "$data/spm.model"
fi

mkdir -p "$exp"
test_set() {  # test_set LANG: its tst-COMMON manifest (with --test-n, the header + the first N utterances)
  local full=data/peft_$1/tst-COMMON.tsv
  if [[ $test_n -gt 0 ]]; then
    head -n $((test_n + 1)) "$full" > "$exp/tst-COMMON_${1}_$test_n.tsv"; echo "$exp/tst-COMMON_${1}_$test_n.tsv"
  else
    echo "$full"
  fi
}
test=
[[ ! -f $data/tst-COMMON.tsv ]] || test=$(test_set "$lang")
de_data=$(dirname "$de_test")
if [[ $de_n -gt 0 ]]; then
  head -n $((de_n + 1)) "$de_test" > "$exp/tst-COMMON_de_$de_n.tsv"; de_test=$exp/tst-COMMON_de_$de_n.tsv
fi

decode() {  # decode CKPT OUT MANIFEST TGT_LANG
  [[ -f "$2/score.json" ]] || speechxl translate --checkpoint "$1" --manifest "$3" --tgt-lang "$4" --out "$2" --beam 5
}

# every run saves 5 checkpoints and averages the last 3 (the last 40% of its updates)
train_run() {  # train_run RUN TRAIN_ARGS...: train (once), time it, average the last 3 checkpoints
  local run=$1 start=$SECONDS; shift
  [[ -d "$run/avg" ]] && return 0
  speechxl train "$@" 2>&1 | tr '\r' '\n' | grep -v '^train: ' > "$run.train.out" || true
  [[ -L "$run/checkpoints/last" ]] || { echo "training $run failed: $run.train.out" >&2; exit 1; }
  echo $((SECONDS - start)) > "$run/train_seconds"
  speechxl average --run-dir "$run" --last 3 --out "$run/avg"
}

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  say "stage 1: the parent on En->De"
  decode "$parent" "$exp/parent_de$de_n/decode_de" "$de_test" de
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  for variant in $variants; do
    run=$exp/${lang}_$variant
    say "stage 2: $run ($updates updates)"
    common=(run_dir="$run" data.manifest_dir="$data" train.max_update="$updates" train.save_every="$((updates / 5))"
            train.log_every="$(( (updates + 9) / 10 ))" model.peft.parent="$parent")
    case $variant in
      scratch)  # the parent's architecture and recipe, new weights, the extended vocabulary
        args=(--config recipes/synth/conf/s2t.yaml run_dir="$run" data.manifest_dir="$data"
              train.max_update="$updates" train.save_every="$((updates / 5))" train.keep_last=3
              train.valid_max_sentences=20) ;;
      adapters) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.adapters={names: [$lang], bottleneck: 64}" "stages.extend.trainable={only: [adapters]}") ;;
      lora)     args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.lora={r: 16, alpha: 32}" "stages.extend.trainable={only: [lora]}") ;;
      xattn_reinit) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.reinit=[cross_attn, cross_attn_norm]" "stages.extend.trainable={only: [xattn]}") ;;
      xattn_random) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"  # new rows drawn at random
              "model.peft.new_rows=random" "stages.extend.trainable={only: [xattn]}") ;;
      xattn_emb) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"  # + every embedding row (tied output)
              "stages.extend.trainable={only: [xattn, embeddings]}") ;;
      *)        args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "stages.extend.trainable={only: [$variant]}") ;;
    esac
    train_run "$run" "${args[@]}"
    decode "$run/avg" "$run/decode_tst-COMMON" "$test" "$lang"
    [[ $variant == scratch ]] || decode "$run/avg" "$run/decode_de" "$de_test" de  # scratch never saw German
  done
fi

if [[ $stage -le 3 && $stop_stage -ge 3 ]]; then
  say "stage 3: En->$lang children of $parent ($updates updates each)"
  runs=()
  for variant in $variants; do runs+=("${lang}_$variant"); done
  python tools/results_table.py --exp "$exp" --runs "parent_de$de_n" "${runs[@]}" --parent "$parent" \
    --label "parent_de$de_n=parent (En→De only)" --label-header "En→$lang child" \
    --dev-metric loss --columns bleu chrf dev trained stored bytes de_bleu time --out "$exp/table_$lang.md"
fi

[[ $multi_updates -gt 0 ]] || multi_updates=$((3 * updates))
multi=data/peft_multi
mexp=$exp/multi

if [[ $stage -le 4 && $stop_stage -ge 4 ]]; then
  say "stage 4: multilingual En->{De,Fr,Es} with language adapters ($multi_updates updates) vs bilingual ($updates each)"
  for l in fr es; do
    [[ -f data/peft_$l/train.tsv ]] || { echo "stage 4 needs data/peft_$l: run stage 0 with --lang $l" >&2; exit 1; }
  done
  if [[ ! -f $multi/spm.model ]]; then  # De, Fr and Es rows in one manifest; the parent's vocabulary + Fr + Es
    python - "$multi" "$de_data" data/peft_fr data/peft_es <<'PY'
import os
import sys

from speechxl.data.manifest import read_manifest, write_manifest

out, sources = sys.argv[1], sys.argv[2:]
os.makedirs(out, exist_ok=True)
for split in ("train", "dev"):
    rows = []
    for source in sources:  # a relative audio path is relative to its manifest's directory
        for row in read_manifest(os.path.join(source, f"{split}.tsv")):
            audio = row["audio"]
            if not os.path.isabs(audio):
                audio = os.path.relpath(os.path.join(source, audio), out)
            rows.append({**row, "id": f"{row['tgt_lang']}_{row['id']}", "audio": audio})
    write_manifest(os.path.join(out, f"{split}.tsv"), rows)
PY
    speechxl extend-vocab --parent "$parent/spm.model" --manifest data/peft_fr/train.tsv data/peft_es/train.tsv \
      --lang fr es --pieces $((2 * pieces)) --out "$multi/spm.model"
  fi
  common=(--config recipes/synth/conf/extend.yaml model.peft.parent="$parent" train.max_update="$updates"
          train.save_every="$((updates / 5))" train.log_every="$(( (updates + 9) / 10 ))")
  # the bilingual En->De models: the parent trained on for --updates more (full), or with a De adapter
  for variant in $bilingual_variants; do
    adapters=()
    [[ $variant != adapters ]] || adapters=("model.peft.adapters={names: [de], bottleneck: 64}")
    train_run "$exp/de_$variant" "${common[@]}" run_dir="$exp/de_$variant" data.manifest_dir="$de_data" \
      "${adapters[@]}" "stages.extend.trainable={only: [$variant]}"
    decode "$exp/de_$variant/avg" "$exp/de_$variant/decode_de" "$de_test" de
  done
  # the multilingual models: one adapter per language, chosen per utterance in mixed batches; the shared body
  # frozen (the parent's: `adapters`) or trained on all three directions as well (`full`)
  for variant in $multi_variants; do
    run=$exp/multi_$variant
    train_run "$run" "${common[@]}" run_dir="$run" data.manifest_dir="$multi" train.max_update="$multi_updates" \
      train.save_every="$((multi_updates / 5))" train.log_every="$(( (multi_updates + 9) / 10 ))" \
      "model.peft.adapters={names: [de, fr, es], bottleneck: 64}" "stages.extend.trainable={only: [$variant]}"
    decode "$run/avg" "$run/decode_de" "$de_test" de
    for l in fr es; do decode "$run/avg" "$run/decode_$l" "$(test_set $l)" $l; done
  done
fi

if [[ $stage -le 5 && $stop_stage -ge 5 ]]; then
  say "stage 5: multilingual vs bilingual table"
  system() {  # system NAME "DE_RUN FR_RUN ES_RUN" NEEDS...: a row's directory of links to its decodes
    local dir=$mexp/$1 runs=($2) seconds=0; shift 2
    rm -rf "$dir"; mkdir -p "$dir"
    local i=0
    for l in de fr es; do
      local run=${runs[$i]} decode=decode_$l; i=$((i + 1))
      [[ $run != "${l}_"* || $l == de ]] || decode=decode_tst-COMMON  # a stage-2 child's own direction
      ln -s "$(realpath -m "$exp/$run/$decode")" "$dir/decode_$l"  # dangling (a "–" in the table) where not run
    done
    for run in $(printf '%s\n' "${runs[@]}" | sort -u); do
      [[ ! -f $exp/$run/train_seconds ]] || seconds=$((seconds + $(cat "$exp/$run/train_seconds")))
    done
    echo "$seconds" > "$dir/train_seconds"
    printf '%s\n' "$@" > "$dir/needs"
  }
  p=$parent/model.safetensors
  system bi_full "de_full fr_full es_full" "$exp/de_full/avg/model.safetensors" \
    "$exp/fr_full/avg/model.safetensors" "$exp/es_full/avg/model.safetensors"
  system bi_adapters "de_adapters fr_adapters es_adapters" "$p" "$exp/de_adapters/avg/model.safetensors" \
    "$exp/fr_adapters/avg/model.safetensors" "$exp/es_adapters/avg/model.safetensors"
  system multi_adapters "multi_adapters multi_adapters multi_adapters" "$p" \
    "$exp/multi_adapters/avg/model.safetensors"
  system multi_full "multi_full multi_full multi_full" "$exp/multi_full/avg/model.safetensors"
  python tools/results_table.py --exp "$mexp" --runs bi_full bi_adapters multi_adapters multi_full \
    --parent "$parent" --decode decode_de --label-header "system | training from the parent" \
    --label "bi_full=3 bilingual, full | 3 x $updates updates" \
    "bi_adapters=3 bilingual, adapters (shared frozen body) | 3 x $updates updates" \
    "multi_adapters=1 multilingual, language adapters (shared frozen body) | $multi_updates mixed updates" \
    "multi_full=1 multilingual, language adapters + shared body trained | $multi_updates mixed updates" \
    --columns bleu@decode_de bleu@decode_fr bleu@decode_es total_stored total_bytes time \
    --out "$exp/table_multi.md"
fi

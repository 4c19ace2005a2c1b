#!/usr/bin/env bash
# Extending a trained En->De SynthST model to a new target language cheaply (issue 14; Gheini et al. 2021):
# children of one parent trained with `full`, `xattn`, `lna`, `adapters`, `lora`, from scratch, and `xattn`
# with re-initialised cross-attention, at equal updates; each decoded on the held-out voice (tst-COMMON) in the
# new language and, for forgetting, in German. Children are delta checkpoints of the parent.
#
#   bash recipes/synth/extend.sh [--stage N] [--stop-stage M] [--lang fr] [--parent exp/demo/avg]
#        [--updates 250] [--variants "xattn full ..."] [--test-n N] [--de-n N] [--exp exp/peft_synth]
#
# Stages: 0 prep + extend the parent's vocabulary  1 decode the parent (De)  2 train + average + decode each
# variant  3 table. Needs data/demo/raw (recipes/synth/run.sh with --data data/demo, which holds en-fr/en-es too).
set -euo pipefail

stage=0
stop_stage=3
lang=fr
parent=exp/demo/avg
raw=data/demo/raw
de_test=data/demo/en-de/tst-COMMON.tsv
updates=250
variants="xattn full lna adapters lora scratch xattn_reinit"
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
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
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

test=$data/tst-COMMON.tsv
mkdir -p "$exp"
if [[ $test_n -gt 0 ]]; then  # the header + the first N utterances
  head -n $((test_n + 1)) "$test" > "$exp/tst-COMMON_${lang}_$test_n.tsv"; test=$exp/tst-COMMON_${lang}_$test_n.tsv
fi
if [[ $de_n -gt 0 ]]; then
  head -n $((de_n + 1)) "$de_test" > "$exp/tst-COMMON_de_$de_n.tsv"; de_test=$exp/tst-COMMON_de_$de_n.tsv
fi

decode() {  # decode CKPT OUT MANIFEST TGT_LANG
  [[ -f "$2/score.json" ]] || speechxl translate --checkpoint "$1" --manifest "$3" --tgt-lang "$4" --out "$2" --beam 5
}

if [[ $stage -le 1 && $stop_stage -ge 1 ]]; then
  say "stage 1: the parent on En->De"
  decode "$parent" "$exp/parent_de$de_n/decode_de" "$de_test" de
fi

if [[ $stage -le 2 && $stop_stage -ge 2 ]]; then
  for variant in $variants; do
    run=$exp/${lang}_$variant
    say "stage 2: $run ($updates updates)"
    common=(run_dir="$run" data.manifest_dir="$data" train.max_update="$updates" model.peft.parent="$parent")
    case $variant in
      scratch)  # the parent's architecture and recipe, new weights, the extended vocabulary
        args=(--config recipes/synth/conf/s2t.yaml run_dir="$run" data.manifest_dir="$data"
              train.max_update="$updates" train.save_every=50 train.keep_last=3 train.valid_max_sentences=20) ;;
      adapters) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.adapters={names: [$lang], bottleneck: 64}" "stages.extend.trainable={only: [adapters]}") ;;
      lora)     args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.lora={r: 16, alpha: 32}" "stages.extend.trainable={only: [lora]}") ;;
      xattn_reinit) args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "model.peft.reinit=[cross_attn, cross_attn_norm]" "stages.extend.trainable={only: [xattn]}") ;;
      *)        args=(--config recipes/synth/conf/extend.yaml "${common[@]}"
              "stages.extend.trainable={only: [$variant]}") ;;
    esac
    if [[ ! -d "$run/avg" ]]; then
      start=$SECONDS
      speechxl train "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v '^train: ' > "$run.train.out" || true
      [[ -L "$run/checkpoints/last" ]] || { echo "training $run failed: $run.train.out" >&2; exit 1; }
      echo $((SECONDS - start)) > "$run/train_seconds"
      speechxl average --run-dir "$run" --last 3 --out "$run/avg"
    fi
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
    --columns bleu chrf trained stored bytes de_bleu time --out "$exp/table_$lang.md"
fi

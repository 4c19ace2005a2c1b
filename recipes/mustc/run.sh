#!/usr/bin/env bash
# MuST-C En->X speech translation with XSTNet: prep -> MT pre-training -> multitask -> average -> decode -> score.
#
#   bash recipes/mustc/run.sh --root /data/MUST-C --lang de --w2v exp/wav2vec_small_hf [--ext-mt /data/wmt_en_de]
#        [--stage N] [--stop-stage M] [--method xstnet|chimera|costt|lut|fat] [--conf FILE] [--data DIR] [--exp DIR]
#        [--vocab-size 10000] [--avg-last 10] [--max-len-b 200] [--amp auto|none|bf16|fp16] [-- key=value ...]
#
# --root     MuST-C root (the directory holding en-<lang>/)        --lang  de es fr it nl pt ro ru
# --w2v      pre-trained wav2vec 2.0 as an HF directory: speechxl convert fairseq-wav2vec2 wav2vec_small.pt DIR
# --method   costt / lut: fbank models, no --w2v; lut needs -- model.teacher_path=DIR (an MT checkpoint)
#            fat: stage 1 pre-trains FAT-MLM (conf/fat_mlm_<variant>.yaml) in EXP/fat_mlm, whose best checkpoint
#            starts FAT-ST (conf/fat_<variant>.yaml: L_ST + L_MT, then ST fine-tuning); overrides go to both runs
# --ext-mt   external MT text (train.en + train.<lang>, aligned lines): selects conf/xstnet_expand.yaml
# --conf     experiment config (default: conf/xstnet_base.yaml, or xstnet_expand.yaml with --ext-mt)
# --amp      mixed precision; auto = bf16 on a CUDA GPU, none on a CPU
# --max-len-b  longest hypothesis in tokens when decoding
# -- k=v     the rest: overrides for `speechxl train` (e.g. -- train.update_freq=4 data.num_workers=8)
#
# Stages: 0 prep (manifests + SentencePiece)  1 MT pre-training (the config's first stage)
#         2 multitask (the rest of the config's stages)  3 average the last N checkpoints
#         4 decode tst-COMMON (beam 10, lenpen 1, forced target tag)  5 score  6 leaderboard
# Stages 1-2 are one resumable `speechxl train` run in --exp: stage 1 stops it at the end of the config's
# first stage (--until-stage 1), stage 2 resumes it there. Re-running a stage after an interruption resumes exactly.
set -euo pipefail

stage=0
stop_stage=6
method=xstnet
lang=de
root=
w2v=
ext_mt=
conf=
data=
exp=
vocab_size=10000
avg_last=10
avg_last_set=
avg_around_best=
lenpen=1
max_len_b=200
amp=auto
overrides=()
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,21p' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --lang) lang=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --w2v) w2v=$2; shift 2 ;;
    --ext-mt) ext_mt=$2; shift 2 ;;
    --conf) conf=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --exp) exp=$2; shift 2 ;;
    --vocab-size) vocab_size=$2; shift 2 ;;
    --avg-last) avg_last=$2; avg_last_set=1; shift 2 ;;
    --max-len-b) max_len_b=$2; shift 2 ;;
    --amp) amp=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "recipes/mustc/run.sh: $*" >&2; exit 2; }
case $method in
  xstnet) ;;
  chimera) avg_around_best=1; lenpen=1.5; [[ $avg_last_set ]] || avg_last=7 ;;  # Chimera: 7 around the best
  costt|lut|fat) fbank=1 ;;  # fbank front ends: no wav2vec2 (--w2v is not used)
  *) die "unknown --method $method (available: xstnet, chimera, costt, lut, fat)" ;;
esac
case $lang in
  de|es|fr|it|nl|pt|ro|ru) ;;
  *) die "--lang $lang is not a MuST-C v1 language (de es fr it nl pt ro ru)" ;;
esac
variant=base
[[ -n $ext_mt ]] && variant=expand
conf=${conf:-$here/conf/${method}_${variant}.yaml}
data=${data:-data/mustc/en-$lang}
exp=${exp:-exp/mustc_en-${lang}_${method}_${variant}}

if [[ $method == fat ]]; then  # FAT-MLM pre-training (stage 1) before FAT-ST; recipes/mustc/stages.sh runs it
  mlm_conf=$here/conf/fat_mlm_$variant.yaml
  mlm_exp=$exp/fat_mlm
fi

prep=(speechxl prep mustc --root "$root" --lang "$lang" --corpus-version v1)
test_split=tst-COMMON
# shellcheck source=recipes/mustc/stages.sh
source "$here/stages.sh"

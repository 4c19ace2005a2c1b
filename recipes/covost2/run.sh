#!/usr/bin/env bash
# CoVoST 2 speech translation (En->X and X->En) with XSTNet: prep -> MT pre-training -> multitask -> average
# -> decode -> score.
#
#   bash recipes/covost2/run.sh --root /data/cv4 --src en --tgt de --w2v exp/wav2vec_small_hf [--ext-mt DIR]
#        [--stage N] [--stop-stage M] [--method xstnet|chimera|costt|lut|fat] [--conf FILE] [--data DIR] [--exp DIR]
#        [--vocab-size 10000] [--avg-last 10] [--max-len-b 200] [--amp auto|none|bf16|fp16] [--jobs 4] [-- key=value ...]
#
# --root     Common Voice root holding <src>/clips, <src>/validated.tsv, <src>/covost_v2.<src>_<tgt>.tsv
# --src/--tgt  one of them is en: En->X (de ca zh fa et mn tr ar sv lv sl ta ja id cy) or
#              X->En (fr de es ca it ru zh pt fa et mn nl tr ar sv lv sl ta ja id cy)
# --w2v      pre-trained wav2vec 2.0 as an HF directory: speechxl convert fairseq-wav2vec2 wav2vec_small.pt DIR
# --method   costt / lut: fbank models, no --w2v; lut needs -- model.teacher_path=DIR (an MT checkpoint)
#            fat: stage 1 pre-trains FAT-MLM (conf/fat_mlm_<variant>.yaml) in EXP/fat_mlm, whose best checkpoint
#            starts FAT-ST (conf/fat_<variant>.yaml: L_ST + L_MT, then ST fine-tuning); overrides go to both runs
#            (use a wav2vec2 pre-trained on the source language's speech for X->En)
# --ext-mt   external MT text (train.<src> + train.<tgt>, aligned lines): selects conf/xstnet_expand.yaml
# --conf     experiment config (default: conf/xstnet_base.yaml, or xstnet_expand.yaml with --ext-mt)
# --amp      mixed precision; auto = bf16 on a CUDA GPU, none on a CPU
# --max-len-b  longest hypothesis in tokens when decoding
# --jobs     processes decoding the mp3 clips in stage 0
# -- k=v     the rest: overrides for `speechxl train`
#
# Stages: 0 prep  1 MT pre-training  2 multitask  3 average  4 decode test (beam 10, lenpen 1)  5 score
#         6 leaderboard. Stages 1-2 are one resumable `speechxl train` run (see recipes/mustc/run.sh).
set -euo pipefail

stage=0
stop_stage=6
method=xstnet
src=en
tgt=de
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
jobs=4
overrides=()
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '2,23p' "$0"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --method) method=$2; shift 2 ;;
    --src) src=$2; shift 2 ;;
    --tgt) tgt=$2; shift 2 ;;
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
    --jobs) jobs=$2; shift 2 ;;
    --) shift; overrides=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "recipes/covost2/run.sh: $*" >&2; exit 2; }
case $method in
  xstnet) ;;
  chimera) avg_around_best=1; lenpen=1.5; [[ $avg_last_set ]] || avg_last=7 ;;  # Chimera: 7 around the best
  costt|lut|fat) fbank=1 ;;  # fbank front ends: no wav2vec2 (--w2v is not used)
  *) die "unknown --method $method (available: xstnet, chimera, costt, lut, fat)" ;;
esac
en_to_x=" de ca zh fa et mn tr ar sv lv sl ta ja id cy "
x_to_en=" fr de es ca it ru zh pt fa et mn nl tr ar sv lv sl ta ja id cy "
if [[ $src == en && $en_to_x == *" $tgt "* ]] || [[ $tgt == en && $x_to_en == *" $src "* ]]; then :; else
  die "--src $src --tgt $tgt is not a CoVoST 2 pair (En->X:$en_to_x; X->En:$x_to_en)"
fi
variant=base
[[ -n $ext_mt ]] && variant=expand
conf=${conf:-$here/conf/${method}_${variant}.yaml}
data=${data:-data/covost2/$src-$tgt}
exp=${exp:-exp/covost2_${src}-${tgt}_${method}_${variant}}

if [[ $method == fat ]]; then  # FAT-MLM pre-training (stage 1) before FAT-ST; recipes/mustc/stages.sh runs it
  mlm_conf=$here/conf/fat_mlm_$variant.yaml
  mlm_exp=$exp/fat_mlm
fi

prep=(speechxl prep covost2 --root "$root" --src "$src" --tgt "$tgt" --jobs "$jobs")
test_split=test
# shellcheck source=recipes/mustc/stages.sh
source "$here/../mustc/stages.sh"

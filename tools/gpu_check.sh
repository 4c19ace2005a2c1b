#!/usr/bin/env bash
# The GPU check of speechxl: one JSON line per figure, about 8 minutes on one CUDA GPU.
#   tools/gpu_check.sh            # from the repository root, in the project's environment
# Figures: training steps/s, tokens/s, MFU and peak memory of S2T-m and XSTNet-base in bf16 (autocast, fused
# AdamW), compile off and on (tools/gpu_check.py), then beam search on CUDA against HF generate
# (tools/bench_decode.py; fp32 asserts identical outputs, bf16 counts them). Each run has its own time
# bound, so one slow compile cannot eat the others' time. Without CUDA it says so and exits 2.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! $PY -c 'import torch' 2>/dev/null; then
    echo "gpu_check: $PY cannot import torch; activate the project's environment (make install)" >&2
    exit 2
fi
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo '{"check": "cuda", "ok": false, "error": "no CUDA device: torch.cuda.is_available() is False"}'
    echo "gpu_check: this machine has no CUDA device; nothing measured" >&2
    exit 2
fi
$PY -c 'import json, torch; print(json.dumps({"check": "cuda", "ok": True, "device": torch.cuda.get_device_name(), "torch": torch.__version__, "cuda": torch.version.cuda}))'

failed=0
run() {  # run SECONDS COMMAND...: a bounded run whose JSON line goes to stdout; a failure is reported, not fatal
    local seconds=$1; shift
    if ! timeout "$seconds" "$@"; then
        echo "{\"check\": \"failed\", \"command\": \"$*\", \"timeout_s\": $seconds}"
        failed=1
    fi
}

# training figures (~5 min): 20 timed steps each after 3 warm-up steps (compilation happens in the warm-up)
run 60 $PY tools/gpu_check.py train --arch s2t --size m
run 100 $PY tools/gpu_check.py train --arch s2t --size m --compile
run 60 $PY tools/gpu_check.py train --arch xstnet --size base
run 100 $PY tools/gpu_check.py train --arch xstnet --size base --compile
# decoding (~2 min): beam 5 over 64 utterances, fp32 (outputs asserted identical) and bf16 autocast
run 60 $PY tools/bench_decode.py --device cuda --size m --utterances 64 --repeats 2
run 60 $PY tools/bench_decode.py --device cuda --size m --utterances 64 --repeats 2 --dtype bf16
exit $failed

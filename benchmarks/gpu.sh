#!/usr/bin/env bash
# On a fresh NVIDIA machine: JAX's GPU build, the GPU-relevant tests (bfloat16 against float32),
# the train step and inference against the PyTorch peer (interleaved rounds; float32 and
# bfloat16; batch 128 and 512), and, given a dataset, the input pipeline on prepared data with
# host and DALI decoding, and main.py's own training loop on it.
#
#   bash benchmarks/gpu.sh [PEER [SOURCE PREPARED]]
#
# PEER is the peer script (default ../shared/peers/torch_alexnet.py); SOURCE a full-size image
# folder with a train/ split (ImageNet layout), PREPARED the same after main.py --mode=prepare.
# SKIP_INSTALL=1 uses the python in $PYTHON (default python3) as it is. MFU: a training image
# is 4.136 GFLOP (../shared/peers/flops.py); an H100 SXM's dense bf16 peak is 989 TFLOP/s.
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${1:-../shared/peers/torch_alexnet.py}
SOURCE=${2:-}
PREPARED=${3:-}
if [ -z "${SKIP_INSTALL:-}" ]; then
  python3 -m venv .venv-gpu
  .venv-gpu/bin/pip install -q -r requirements-gpu.txt -r requirements-dali.txt torch
  PYTHON=.venv-gpu/bin/python
fi
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
$PY -c "import jax; print(jax.__version__, jax.devices())"

JAX_PLATFORMS=cuda $PY -m pytest -q tests/test_models.py tests/test_train.py \
  -k "bfloat16 and not two_model_devices"

for round in 1 2; do
  echo "== round $round"
  for dtype in float32 bfloat16; do
    $PY -m benchmarks.model_speed --config=configs/alexnet.py --batch=128,512 --steps=50 \
      --dtype=$dtype
  done
  $PY -m benchmarks.model_speed --config=configs/cifar10.py --config.crop_size=32 --batch=128 \
    --steps=100 --mode=train
  TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1 $PY "$PEER" --net alexnet --batch 128 --steps 50 \
    --device cuda --compile
  $PY "$PEER" --net alexnet --batch 128 --steps 50 --device cuda --compile --bf16
  $PY "$PEER" --net alexnet --batch 512 --steps 20 --device cuda --compile --bf16 --mode train
  $PY "$PEER" --net cifar --batch 128 --steps 100 --device cuda --mode train
done

if [ -n "$PREPARED" ]; then
  for decoder in host dali; do
    $PY -m benchmarks.input_pipeline --config=configs/alexnet.py \
      --config.dataset="folder:$SOURCE" --config.num_classes="$(ls "$SOURCE/train" | wc -l)" \
      --prepared="$PREPARED" --config.decoder=$decoder --workdir=/tmp/supervision_gpu_bench \
      --batches=20 --steps=50 --rounds=3 --trainer_steps=300
  done
fi

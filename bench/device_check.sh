#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one call sized for a short lease (about 8 minutes of the
# limits below): the tests that take a CUDA device where one is present (bf16 against float32,
# the augmentation ops, a bf16 run end to end), then per-step time and peak memory at the papers'
# sizes with bf16 off and on, then the step-time ratios of the modes.
#
#     bench/device_check.sh DATA_DIR OUT_DIR
#
# DATA_DIR: an ImageFolder root with train/ (e.g. a copy of shared/data/cifar10-subset inside the
# repo, in a folder .git/info/exclude ignores, carried to the machine). PYTHON picks the interpreter
# (default python3). Each part writes its output to OUT_DIR and a failed part does not stop the next.
# nccl DDP needs two GPUs: a one-GPU machine cannot run it (two ranks may not share a GPU).
set -u -o pipefail
data=${1:?usage: bench/device_check.sh DATA_DIR OUT_DIR}
out=${2:?usage: bench/device_check.sh DATA_DIR OUT_DIR}
python=${PYTHON:-python3}
data=$(realpath "$data") && out=$(realpath -m "$out") || exit 2
export PYTHONUNBUFFERED=1
mkdir -p "$out"
cd "$(dirname "$0")/.." || exit 2

{ nvidia-smi -L; "$python" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } \
    2>&1 | tee "$out/device.txt"
timeout 180 "$python" -m pytest -q -p no:cacheprovider -rs tests/test_models_amp.py tests/test_augment_apply.py \
    tests/test_augment_fixed.py tests/test_augment_ops.py 2>&1 | tee "$out/tests.txt"
timeout 240 "$python" bench/memory.py "$data" --device cuda --rows 0,4,7,8 2>&1 | tee "$out/memory.txt"
timeout 120 "$python" bench/step_time.py "$data" --device cuda --skip_darts 2>&1 | tee "$out/step_time.txt"

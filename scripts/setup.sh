#!/usr/bin/env bash
# Set up losslens in ./.venv on a fresh machine (no GPU needed). Safe to re-run.
#   bash scripts/setup.sh            # losslens + test tools + lm-evaluation-harness + the trackers the tests use
#   LOSSLENS_EXTRAS=dev bash scripts/setup.sh   # without lm-eval and the trackers (their tests skip)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${LOSSLENS_EXTRAS:-dev,lm-eval,tensorboard,mlflow,wandb}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: an unpinned torch (or one pulled in by another package) can mean a
# multi-GB CUDA build. On a CPU machine with a local wheel, pip takes that.
$PIP install -q "torch==${TORCH_VERSION}"
# DeepSpeed compiles its (CPU-only here) extensions against the installed torch at build time.
$PIP install -q --no-build-isolation "deepspeed>=0.15"
$PIP install -q -e ".[${EXTRAS}]"
.venv/bin/python -c "import torch, transformers, accelerate, deepspeed, losslens; print('losslens ready: torch', torch.__version__, '| transformers', transformers.__version__, '| accelerate', accelerate.__version__, '| deepspeed', deepspeed.__version__)"

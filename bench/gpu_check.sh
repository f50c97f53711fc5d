#!/usr/bin/env bash
# GPU checks of the training paths, for a machine with one CUDA GPU and losslens importable:
# bf16 + SDPA MFU without and with torch.compile on a ~125M model, then the tiny study under
# DeepSpeed ZeRO-2 and plain accelerate on the GPU. Writes logs under ${OUT:-/tmp/gpu_check}.
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
$PY bench/mfu.py --out /tmp/mfu_eager 2>&1 | grep -v "it/s\]\|step/s" | tee "$OUT/mfu_eager.txt"
$PY bench/mfu.py --compile --out /tmp/mfu_compile 2>&1 | grep -v "it/s\]\|step/s" | tee "$OUT/mfu_compile.txt"
$PY bench/mfu.py --compile --micro-batch 32 --out /tmp/mfu_compile32 2>&1 | grep -v "it/s\]\|step/s" | tee "$OUT/mfu_compile_mb32.txt"
$PY -m accelerate.commands.launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 1 \
    -m losslens train configs/tiny.yaml --out /tmp/tiny_ds_gpu > "$OUT/tiny_deepspeed.txt" 2>&1; echo "deepspeed exit $?" | tee -a "$OUT/gpu.txt"
$PY -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 \
    -m losslens train configs/tiny.yaml --out /tmp/tiny_fsdp_gpu > "$OUT/tiny_fsdp.txt" 2>&1; echo "fsdp exit $?" | tee -a "$OUT/gpu.txt"
$PY -m losslens train configs/tiny.yaml --out /tmp/tiny_gpu > "$OUT/tiny_plain.txt" 2>&1; echo "plain exit $?" | tee -a "$OUT/gpu.txt"
for d in /tmp/tiny_gpu /tmp/tiny_ds_gpu /tmp/tiny_fsdp_gpu; do
  $PY - "$d" <<'PY' | tee -a "$OUT/gpu.txt"
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
for run in sorted(p for p in d.iterdir() if p.is_dir() and p.name != "data"):
    ckpts = sorted(run.glob("ckpt-*"))
    m = json.loads((ckpts[-1] / "meta.json").read_text())
    print(d.name, run.name, "checkpoints", len(ckpts), "final val_loss", round(m["val_loss"], 4), "world", m["world_size"])
PY
done

#!/usr/bin/env bash
# Every GPU figure in one go (~8 minutes on one H100/H200), for a machine with one CUDA GPU and losslens
# importable. Writes logs under ${OUT:-/tmp/gpu_check}:
#   mfu_none.txt, mfu_liger.txt  MFU, tokens/s and peak memory at ~125M and ~350M (bf16, context 1024),
#                                eager and compiled, without and with Liger's fused kernels; the losslens
#                                loop beside a bare step of the same model; the top kernels of one step
#   curve_bf16.txt, curve_fp32.txt, curves.txt   the same 125M model for 200 steps in bf16 and fp32
#   tiny_{plain,deepspeed,fsdp}.txt, launches.txt   configs/tiny.yaml under three launch paths
# Each phase has its own time limit, so one that hangs costs only its own figures. MFU_NONE, MFU_LIGER
# (configurations, see bench/gpu_bench.py), CURVES=0 and LAUNCHES=0 narrow a rerun. Every log is also
# packed into logs.tgz (a device that returns few files returns that and gpu.txt).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
WORK=${WORK:-/tmp/gpu_work}
PY=${PYTHON:-python3}
export TQDM_DISABLE=1 TOKENIZERS_PARALLELISM=true PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, accelerate, deepspeed; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"

# 1. MFU with the GPU to itself. Liger patches transformers for the whole process: its own process.
MFU_NONE=${MFU_NONE-125m:none:compile+bare+profile 125m:none:compile+mb32 125m:none:eager+bare 350m:none:compile+bare 350m:none:eager}
MFU_LIGER=${MFU_LIGER-125m:liger:eager+bare 350m:liger:eager 125m:liger:compile 350m:liger:compile}
timeout 200 $PY bench/gpu_bench.py --out "$WORK/bench" $MFU_NONE > "$OUT/mfu_none.txt" 2>&1
echo "mfu none exit $?" | tee -a "$OUT/gpu.txt"
timeout 160 $PY bench/gpu_bench.py --out "$WORK/bench" --data "$WORK/bench/data_study/data" $MFU_LIGER > "$OUT/mfu_liger.txt" 2>&1
echo "mfu liger exit $?" | tee -a "$OUT/gpu.txt"
grep -h "^config\|^ratio" "$OUT"/mfu_*.txt | tee -a "$OUT/gpu.txt"

# 2. Numerics and launch paths, side by side (none of these is timed).
[ "${CURVES:-1}" = 1 ] && for p in bf16 fp32; do
  timeout 150 $PY bench/gpu_bench.py --out "$WORK/bench" --data "$WORK/bench/data_study/data" \
      --precision $p --curve 200 --global-batch 16 > "$OUT/curve_$p.txt" 2>&1 &
done
if [ "${LAUNCHES:-1}" = 1 ]; then
  timeout 150 $PY -m losslens train configs/tiny.yaml --out "$WORK/tiny_plain" > "$OUT/tiny_plain.txt" 2>&1 &
  timeout 150 $PY -m accelerate.commands.launch --config_file configs/accelerate/deepspeed_zero2.yaml --num_processes 1 \
      --main_process_port 29511 -m losslens train configs/tiny.yaml --out "$WORK/tiny_deepspeed" > "$OUT/tiny_deepspeed.txt" 2>&1 &
  timeout 150 $PY -m accelerate.commands.launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 \
      --main_process_port 29512 -m losslens train configs/tiny.yaml --out "$WORK/tiny_fsdp" > "$OUT/tiny_fsdp.txt" 2>&1 &
fi
wait
$PY - "$OUT" "$WORK" <<'PY' 2>&1 | tee -a "$OUT/gpu.txt"
import json, re, sys, pathlib
out, work = map(pathlib.Path, sys.argv[1:])
curves = {}
for p in ("bf16", "fp32"):
    log = out / f"curve_{p}.txt"
    lines = [l for l in log.read_text().splitlines() if l.startswith("curve ")] if log.is_file() else []
    curves[p] = {int(m[1]): (float(m[2]), m[3]) for m in (re.match(r"curve \S+ step (\d+) loss (\S+) tok/s (\S+)", l) for l in lines)}
if all(200 in c for c in curves.values()):
    b, f = curves["bf16"][200][0], curves["fp32"][200][0]
    print(f"curves: loss at step 200 bf16 {b:.4f} fp32 {f:.4f} relative difference {abs(b - f) / f:.4%}; "
          f"tok/s bf16 {curves['bf16'][200][1]} fp32 {curves['fp32'][200][1]}")
else:
    print("curves: incomplete", {p: max(c, default=None) for p, c in curves.items()})
finals = {}
for path in ("plain", "deepspeed", "fsdp"):
    d = work / f"tiny_{path}"
    for run in sorted(p for p in d.glob("*") if p.is_dir() and p.name != "data"):
        ckpts = sorted(run.glob("ckpt-*"), key=lambda p: int(json.loads((p / "meta.json").read_text())["tokens"]))
        if ckpts:
            m = json.loads((ckpts[-1] / "meta.json").read_text())
            finals.setdefault(run.name, {})[path] = m["val_loss"]
            print(f"launch {path} {run.name}: {len(ckpts)} checkpoints, final val_loss {m['val_loss']:.4f}, world {m['world_size']}")
for run, by_path in finals.items():
    if len(by_path) == 3:
        lo, hi = min(by_path.values()), max(by_path.values())
        print(f"launch spread {run}: {(hi - lo) / lo:.3%}")
    else:
        print(f"launch spread {run}: only {sorted(by_path)}")
PY
tar czf "$OUT/logs.tgz" -C "$OUT" --exclude logs.tgz $(cd "$OUT" && ls *.txt)

"""GPU training figures in one process: MFU per (size, kernels, compile), the losslens loop against a
bare step of the same model, peak memory, and a profile of one step.

The corpus is tokenized once (byte-level BPE, 32K vocabulary); every configuration then trains its own
study on those shards through ``losslens.train`` and reads tokens/s and MFU from its own log (the first
log window, which holds compilation, is skipped). Configurations are ``SIZE:KERNELS:MODE`` with SIZE in
``SIZES``, KERNELS ``none|liger`` and MODE ``eager|compile``; ``+bare`` times a bare step of the same
model afterwards (plain PyTorch: autocast, the same micro-batches and accumulation, fused AdamW, clipping)
``+mbN`` sets the micro-batch, ``+lrX`` the peak learning rate, ``+profile`` prints the 15 kernels that take the most GPU time in one bare step. Liger patches
transformers for the whole process, so list the ``none`` configurations first.

    python bench/gpu_bench.py --out /tmp/gpu 125m:none:eager+bare+profile 125m:none:compile+bare ...
    python bench/gpu_bench.py --out /tmp/gpu --curve 200 --precision fp32   # a loss curve (bf16 vs fp32)

Each configuration prints one ``config ...`` line; the last line is ``ratio losslens/bare: R`` for the
last configuration timed both ways.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from losslens.config import study_from_dict
from losslens.train.kernels import apply_liger
from losslens.train.loop import train_run
from losslens.train.model import build_model
from losslens.train.plan import plan_runs
from losslens.train.runtime import build_optimizer, make_accelerator
from losslens.train.study import prepare_study_dir

CUDA = torch.cuda.is_available()  # a CPU run is a smoke test of this script (size tiny)


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def reset_peak() -> None:
    if CUDA:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if CUDA else 0.0


# (width, depth, heads, ffn): GPT-3-small-like 125M and a ~350M (both with a 32K vocabulary).
SIZES = {"tiny": (64, 2, 4, 172), "125m": (768, 12, 12, 2048), "350m": (1024, 24, 16, 2816)}


def write_corpus(path: Path, docs: int) -> None:
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 10))) for _ in range(20000)]
    path.write_text("\n\n".join(" ".join(rng.choice(words, size=200)) for _ in range(docs)))


def make_study(args, out: Path, size: str, kernels: str, compile_: bool, steps: int, micro_batch: int | None = None,
               lr: float | None = None):
    width, depth, heads, ffn = SIZES[size]
    return study_from_dict({
        "name": "gpu", "out_dir": str(out), "seed": 0,
        "model": {"context": args.context, "sizes": {size: {"width": width, "depth": depth, "heads": heads, "ffn": ffn}}},
        "data": {"paths": [str(args.corpus)], "tokenizer": {"kind": "bpe", "vocab_size": args.vocab},
                 "val_tokens": 65536},
        "budgets": [steps * args.global_batch * args.context],
        "train": {"global_batch": args.global_batch, "micro_batch": micro_batch or args.micro_batch,
                  "log_every": args.log_every, "optimizer": {"lr": lr or args.lr}, "schedule": {"kind": "cosine", "warmup": args.warmup},
                  "compile": compile_, "precision": args.precision, "kernels": kernels},
        "checkpoints": {"count": 1, "log_spaced": False, "val_tokens": 8192},
    })


def bare_step_tokens_per_s(study, plan, accelerator, data_dir: Path, kernels: str, compile_: bool,
                           steps: int, profile: bool) -> tuple[float, float]:
    """Tokens/s of a plain PyTorch loop over the same model and batch shape (and peak memory, GiB)."""
    meta = json.loads((data_dir / "data.json").read_text())
    device = accelerator.device
    model = build_model(plan.size, study.model, meta["vocab_size"], meta["eos_id"], seed=0)
    if kernels == "liger":
        apply_liger(model)
    model.to(device).train()
    opt = build_optimizer(model, study, device)
    fwd = torch.compile(model) if compile_ else model
    t = study.train
    accum = t.global_batch // t.micro_batch
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, meta["vocab_size"], (t.micro_batch, study.model.context + 1), generator=g).to(device)
               for _ in range(accum)]
    dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32

    def step():
        for batch in batches:
            inputs, targets = batch[:, :-1], batch[:, 1:]
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                if kernels == "liger":
                    loss = fwd(input_ids=inputs, shift_labels=targets.contiguous()).loss
                else:
                    logits = fwd(input_ids=inputs).logits
                    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            (loss / accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.optimizer.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(5):  # warm-up (and compilation)
        step()
    sync()
    reset_peak()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    tok_s = steps * t.global_batch * study.model.context / (time.perf_counter() - start)
    peak = peak_gib()
    if profile:
        from torch.profiler import ProfilerActivity, profile as torch_profile
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            sync()
        print(prof.key_averages().table(sort_by="self_cuda_time_total" if CUDA else "self_cpu_time_total", row_limit=15, max_name_column_width=70))
    del model, opt, fwd
    return tok_s, peak


def run_config(args, spec: str, accelerator, data_dir: Path) -> tuple[float, float | None]:
    name, *extras = spec.split("+")
    size, kernels, mode = name.split(":")
    torch._dynamo.reset()  # each configuration compiles afresh, within dynamo's recompile limits
    reset_peak()
    out = args.out / name.replace(":", "_")
    shutil.rmtree(out, ignore_errors=True)  # a study left by an earlier try would resume, not train
    micro = next((int(e[2:]) for e in extras if e.startswith("mb")), None)
    lr = next((float(e[2:]) for e in extras if e.startswith("lr")), None)  # MFU does not depend on it; stability does
    study = make_study(args, out, size, kernels, mode == "compile", args.steps, micro, lr)
    plan = plan_runs(study)[0]
    started = time.perf_counter()
    train_run(study, plan, accelerator, data_dir)
    wall = time.perf_counter() - started
    log = [json.loads(l) for l in (out / plan.name / "train_log.jsonl").read_text().splitlines()]
    steady = [r for r in log[1:] if r["step"] % args.log_every == 0]
    tok_s = statistics.median(r["tokens_per_s"] for r in steady)
    mfu = statistics.median(r["mfu"] if r["mfu"] is not None else float("nan") for r in steady)  # None: no peak known (CPU)
    peak = peak_gib()
    meta = json.loads(sorted((out / plan.name).glob("ckpt-*"))[-1].joinpath("meta.json").read_text())
    line = (f"config {spec}: {meta['n_params'] / 1e6:.0f}M params ({meta['n_params_nonembed'] / 1e6:.0f}M non-emb), "
            f"ctx {args.context}, batch {args.global_batch}x{study.train.micro_batch}, {args.precision}, "
            f"lr {study.train.optimizer.lr:g}; "
            f"losslens {tok_s:,.0f} tok/s, MFU {mfu:.3f}, peak {peak:.1f} GiB, wall {wall:.0f} s, "
            f"loss {log[0]['loss']:.3f} -> {log[-1]['loss']:.3f}")
    ratio = None
    if "bare" in extras:
        bare, bare_peak = bare_step_tokens_per_s(study, plan, accelerator, data_dir, kernels, mode == "compile",
                                                 len(steady) * args.log_every, "profile" in extras)
        ratio = tok_s / bare
        line += f"; bare {bare:,.0f} tok/s (peak {bare_peak:.1f} GiB), losslens/bare {ratio:.3f}"
    print(line, flush=True)
    shutil.rmtree(out, ignore_errors=True)  # checkpoints of a 350M model are GBs
    return mfu, ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", default=["125m:none:compile+bare"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data", type=Path, help="reuse the token shards of an earlier run (its DATA folder)")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--docs", type=int, default=12000, help="corpus documents of 200 words")
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (+lrX sets one configuration's)")
    p.add_argument("--warmup", type=float, default=0.25, help="warmup fraction (no warmup diverges at 350M)")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--curve", type=int, help="train one model for this many steps and print its loss curve instead")
    p.add_argument("--curve-size", choices=sorted(SIZES), default="125m")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.corpus = args.out / "corpus.txt"
    if not args.corpus.exists():
        write_corpus(args.corpus, args.docs)
    print(f"device: {torch.cuda.get_device_name() if CUDA else 'cpu'}; torch {torch.__version__}", flush=True)

    first = make_study(args, args.out / "data_study", "125m", "none", False, 1)
    accelerator = make_accelerator(first)
    started = time.perf_counter()
    data_dir = args.data or prepare_study_dir(first, accelerator)
    print(f"data: {data_dir} ({time.perf_counter() - started:.0f} s)", flush=True)

    if args.curve:
        study = make_study(args, args.out / f"curve_{args.precision}", args.curve_size, "none", False, args.curve)
        plan = plan_runs(study)[0]
        try:
            train_run(study, plan, accelerator, data_dir)
        finally:  # a diverged curve still prints the steps before it
            for line in (study.output_dir / plan.name / "train_log.jsonl").read_text().splitlines():
                r = json.loads(line)
                print(f"curve {args.precision} step {r['step']} loss {r['loss']:.5f} tok/s {r['tokens_per_s']:,.0f} "
                      f"grad_norm {r.get('grad_norm')}")
        return

    ratio = None
    for spec in args.configs:
        try:
            _, r = run_config(args, spec, accelerator, data_dir)
            ratio = r if r is not None else ratio
        except Exception as e:  # one failed configuration must not cost the others' figures
            print(f"config {spec}: FAILED {type(e).__name__}: {e}", flush=True)
    if ratio is not None:
        print(f"ratio losslens/bare: {ratio:.3f}")


if __name__ == "__main__":
    main()

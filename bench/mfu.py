"""Model FLOP utilisation of the losslens training loop on a GPU (bf16, SDPA, optional torch.compile).

Trains a Llama model of about 125M parameters (width 768, 12 layers, 12 heads, byte-level BPE with a
32K vocabulary) at context 1024 for a few dozen steps through ``losslens.train`` and reads tokens/s and
MFU from its own log (the first window, with compilation, is skipped). MFU = 6N+12LHQT FLOPs per token
x tokens/s over the device's datasheet peak (``losslens.train.mfu``).

    python bench/mfu.py [--compile] [--steps 60] [--micro-batch 16] [--global-batch 32]

The last line is the headline: ``ratio achieved/peak (MFU): R``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from losslens.config import study_from_dict
from losslens.train.loop import train_run
from losslens.train.plan import plan_runs
from losslens.train.runtime import make_accelerator
from losslens.train.study import prepare_study_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--ffn", type=int, default=2048)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--global-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--kernels", choices=["auto", "liger", "none"], default="auto", help="train.kernels (Liger)")
    p.add_argument("--out", help="keep the study here instead of a temporary folder")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        corpus = out / "corpus.txt"
        if not corpus.exists():
            rng = np.random.default_rng(0)
            words = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), size=rng.integers(2, 10))) for _ in range(20000)]
            corpus.write_text("\n\n".join(" ".join(rng.choice(words, size=200)) for _ in range(12000)))
        study = study_from_dict({
            "name": "mfu", "out_dir": str(out / "study"), "seed": 0,
            "model": {"context": args.context, "sizes": {"m": {"width": args.width, "depth": args.depth,
                                                                "heads": args.heads, "ffn": args.ffn}}},
            "data": {"paths": [str(corpus)], "tokenizer": {"kind": "bpe", "vocab_size": args.vocab},
                     "val_tokens": 65536},
            "budgets": [args.steps * args.global_batch * args.context],
            "train": {"global_batch": args.global_batch, "micro_batch": args.micro_batch,
                      "log_every": args.log_every, "compile": args.compile, "precision": "auto",
                      "kernels": args.kernels},
            "checkpoints": {"count": 1, "log_spaced": False, "val_tokens": 8192},
        })
        accelerator = make_accelerator(study)
        data_dir = prepare_study_dir(study, accelerator)
        plan = plan_runs(study)[0]
        summary = train_run(study, plan, accelerator, data_dir)
        log = [json.loads(l) for l in (study.output_dir / plan.name / "train_log.jsonl").read_text().splitlines()]
        steady = [r for r in log[1:] if r["step"] % args.log_every == 0]
        meta = json.loads((summary.final_checkpoint / "meta.json").read_text())
        tok_s = statistics.median(r["tokens_per_s"] for r in steady)
        mfu = statistics.median(r["mfu"] for r in steady) if steady[0]["mfu"] is not None else float("nan")
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"device: {device}; precision {accelerator.mixed_precision}; compile {args.compile}; "
              f"kernels {args.kernels}")
        print(f"model: {meta['n_params'] / 1e6:.1f}M params ({meta['n_params_nonembed'] / 1e6:.1f}M non-embedding), "
              f"context {args.context}, global batch {args.global_batch} x micro {args.micro_batch}")
        print(f"losses: first {log[0]['loss']:.3f} -> last {log[-1]['loss']:.3f}; val {meta['val_loss']:.3f}")
        print(f"tokens/s: {tok_s:,.0f}; peak memory {torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0:.1f} GiB")
        print(f"ratio achieved/peak (MFU): {mfu:.3f}")


if __name__ == "__main__":
    main()

"""Training throughput: the losslens loop against a bare PyTorch loop, same model, batch and machine.

Both loops run the same Llama model, AdamW, gradient clipping, LR schedule and batch shape, in this
process, alternating A/B/A/B so that machine noise hits both alike. losslens' figure is read from its
own log (tokens/s per log window, after a warm-up window); the bare loop is timed over the same steps.
Also prints achieved FLOP/s against this machine's measured matmul FLOP/s (a CPU has no datasheet peak).

    python bench/train_throughput.py [--width 256 --depth 4 --context 256 --batch 8 --steps 40]

The last line is the headline: ``ratio losslens/bare: R`` (tokens/s; 1.0 = no overhead).

With ``--trackers tensorboard,mlflow`` it compares losslens with those experiment trackers on against
off instead, A/B/B/A/A/B... on the same study: tokens/s over each whole run (wall clock from start to the
final checkpoint, so the trackers' logging, which happens outside the log windows, is counted, as is
opening and closing the tracker run), after one untimed run that creates the trackers' stores. The last
line is then ``ratio trackers-on/off: R``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from losslens.config import study_from_dict
from losslens.train.loop import train_run
from losslens.counts import flops_per_token
from losslens.train.model import build_model, parameter_counts
from losslens.train.plan import plan_runs
from losslens.train.runtime import build_optimizer, make_accelerator
from losslens.train.schedule import learning_rate
from losslens.train.study import prepare_study_dir


def make_study(out: Path, args) -> dict:
    corpus = out / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefghij"), size=rng.integers(2, 8))) for _ in range(500)]
    corpus.write_text("\n\n".join(" ".join(rng.choice(words, size=60)) for _ in range(3000)))
    return {
        "name": "bench", "out_dir": str(out / "study"), "seed": 0,
        "model": {"context": args.context, "sizes": {"m": {"width": args.width, "depth": args.depth,
                                                            "heads": args.heads}}},
        "data": {"paths": [str(corpus)], "tokenizer": {"kind": "char"}, "val_tokens": 4096},
        "budgets": [args.steps * args.batch * args.context],
        "train": {"global_batch": args.batch, "micro_batch": args.batch, "log_every": args.log_every,
                  "threads": args.threads, "optimizer": {"lr": 1e-3}},
        "checkpoints": {"count": 1, "log_spaced": False, "val_tokens": 1024},
    }


def losslens_tokens_per_s(study, accelerator, data_dir) -> float:
    plan = plan_runs(study)[0]
    train_run(study, plan, accelerator, data_dir)
    accelerator.free_memory()
    log = [json.loads(l) for l in (study.output_dir / plan.name / "train_log.jsonl").read_text().splitlines()]
    windows = [r["tokens_per_s"] for r in log[1:] if r["step"] % study.train.log_every == 0]  # skip warm-up
    return statistics.median(windows)


def run_tokens_per_s(study, accelerator, data_dir) -> tuple[float, float]:
    """Tokens over the wall time of a whole fresh run (its tracker run opened and closed included), and
    over the CPU time of this process (every thread, the trackers' too): the work they add, which
    other jobs on a shared machine disturb far less than the wall clock."""
    plan = plan_runs(study)[0]
    shutil.rmtree(study.output_dir / plan.name, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    train_run(study, plan, accelerator, data_dir)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    accelerator.free_memory()
    tokens = plan.tokens_at(plan.total_steps)
    return tokens / elapsed, tokens / cpu


def compare_trackers(raw: dict, trackers: list[str], rounds: int) -> None:
    """A/B/A/B: the same study with train.trackers off and on, in this process; prints the ratio last."""
    off = study_from_dict(raw)
    on = study_from_dict({**raw, "train": {**raw["train"], "trackers": trackers}})
    accelerator = make_accelerator(off)
    data_dir = prepare_study_dir(off, accelerator)
    run_tokens_per_s(on, accelerator, data_dir)  # untimed: creates the stores (MLflow's database) and warms up
    ratios, cpu_ratios = [], []
    for r in range(rounds):  # A B, then B A: the second run of a pair ran faster here, whichever it was
        if r % 2 == 0:
            a, b = run_tokens_per_s(off, accelerator, data_dir), run_tokens_per_s(on, accelerator, data_dir)
        else:
            b, a = run_tokens_per_s(on, accelerator, data_dir), run_tokens_per_s(off, accelerator, data_dir)
        ratios.append(b[0] / a[0])
        cpu_ratios.append(b[1] / a[1])
        print(f"round {r}: trackers off {a[0]:,.0f} tok/s ({a[1]:,.0f} per CPU s), on ({','.join(trackers)}) "
              f"{b[0]:,.0f} tok/s ({b[1]:,.0f} per CPU s), on/off {ratios[-1]:.3f} (CPU {cpu_ratios[-1]:.3f})",
              flush=True)
    print(f"median of {rounds} rounds; steps per run {plan_runs(off)[0].total_steps}, "
          f"log every {off.train.log_every}; tokens per CPU second on/off {statistics.median(cpu_ratios):.3f}")
    print(f"ratio trackers-on/off: {statistics.median(ratios):.3f}")


def bare_tokens_per_s(study, args, vocab: int) -> float:
    """The same work as the losslens step, written as plainly as possible."""
    plan = plan_runs(study)[0]
    model = build_model(plan.size, study.model, vocab, 0, seed=0)
    optimizer = build_optimizer(model, study, torch.device("cpu"))
    data = torch.randint(0, vocab, (args.steps, args.batch, args.context + 1))
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, study.train.optimizer.lr, study.train.schedule, plan)
        batch = data[step]
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    measured = times[args.log_every:]  # the same warm-up skip as for losslens
    windows = [sum(measured[i : i + args.log_every]) for i in range(0, len(measured) - args.log_every + 1, args.log_every)]
    return statistics.median(args.log_every * args.batch * args.context / w for w in windows)


def matmul_flops(threads: int, n: int = 1024, reps: int = 20) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--trackers", type=lambda v: [t for t in v.split(",") if t],
                   help="compare these experiment trackers on against off, e.g. tensorboard,mlflow")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        raw = make_study(Path(tmp), args)
        if args.trackers:
            return compare_trackers(raw, args.trackers, args.rounds)
        study = study_from_dict(raw)
        accelerator = make_accelerator(study)
        data_dir = prepare_study_dir(study, accelerator)
        vocab = json.loads((data_dir / "data.json").read_text())["vocab_size"]
        ours, bare = [], []
        for r in range(args.rounds):
            for run_dir in study.output_dir.glob("m_*"):  # a fresh run each round
                shutil.rmtree(run_dir)
            ours.append(losslens_tokens_per_s(study, accelerator, data_dir))
            bare.append(bare_tokens_per_s(study, args, vocab))
            print(f"round {r}: losslens {ours[-1]:,.0f} tok/s, bare {bare[-1]:,.0f} tok/s", flush=True)
        model = build_model(plan_runs(study)[0].size, study.model, vocab, 0, 0)
        _, nonembed = parameter_counts(model)
        fpt = flops_per_token(nonembed, args.width, args.depth, args.context, vocab)
        peak = matmul_flops(args.threads)
        tok_ours, tok_bare = statistics.median(ours), statistics.median(bare)
        print(f"model: width {args.width}, depth {args.depth}, context {args.context}, batch {args.batch}, "
              f"{nonembed / 1e6:.2f}M non-embedding params, {torch.get_num_threads()} threads")
        print(f"losslens: {tok_ours:,.0f} tokens/s   bare PyTorch: {tok_bare:,.0f} tokens/s")
        print(f"achieved {fpt * tok_ours / 1e9:.1f} GFLOP/s of measured matmul {peak / 1e9:.1f} GFLOP/s "
              f"(utilisation {fpt * tok_ours / peak:.2f})")
        print(f"ratio losslens/bare: {tok_ours / tok_bare:.3f}")


if __name__ == "__main__":
    sys.exit(main())

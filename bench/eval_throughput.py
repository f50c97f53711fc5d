"""Multiple-choice evaluation throughput: losslens vs lm-evaluation-harness, same checkpoint, same task.

    .venv/bin/python bench/eval_throughput.py [--checkpoint DIR] [--examples 500] [--device cpu]

Without ``--checkpoint`` a randomly initialised Llama (``--width``, ``--layers``, an output layer
of ``--vocab`` rows like a BPE model's) with a character-level tokenizer is saved to a temporary
folder. The task is a synthetic 4-choice task
of ``--examples`` examples with contexts of ~``--context-chars`` characters (the usual shape of
multiple-choice benchmarks: a long context, short choices), written as JSONL and, for lm-eval, as
a local task YAML (losslens.evaluate.harness). Each tool is timed end to end after its imports:
model and tokenizer loading, task loading, scoring and metrics. The last line is the speed ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def make_checkpoint(folder: Path, width: int, layers: int, context: int, vocab_size: int) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<|endoftext|>": 0, "<unk>": 1}
    for ch in " \n0123456789+-=?.,:;!'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    # The output layer has vocab_size rows, as a BPE model's would; the characters use the first ~80 ids.
    cfg = LlamaConfig(vocab_size=max(vocab_size, len(tokenizer)), hidden_size=width, num_hidden_layers=layers,
                      num_attention_heads=max(1, width // 64), intermediate_size=4 * width,
                      max_position_embeddings=context, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                      tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_task(path: Path, n: int, k: int, context_chars: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = ["the", "a", "cat", "sat", "on", "mat", "dog", "ran", "far", "and", "then", "it", "was", "red", "big"]
    rows = []
    for _ in range(n):
        story = []
        while sum(len(w) + 1 for w in story) < context_chars:
            story.append(str(rng.choice(words)))
        a, b = int(rng.integers(10, 90)), int(rng.integers(10, 90))
        answer = int(rng.integers(0, k))
        wrong = [a + b + d for d in rng.choice([-11, -10, -2, -1, 1, 2, 10, 11], size=k - 1, replace=False)]
        choices = [f" {x}" for x in wrong]
        choices.insert(answer, f" {a + b}")
        rows.append({"context": " ".join(story) + f". Q: {a}+{b}=? A:", "choices": choices, "answer": answer})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_losslens(ckpt: Path, data: Path, batch_size: int, device: str) -> tuple[float, float]:
    from losslens.evaluate.runner import TaskSettings, evaluate_task
    from losslens.evaluate.scoring import Scorer
    from losslens.evaluate.units import load_checkpoint
    from losslens.evaluate.tasks import load_task

    start = time.perf_counter()
    model, tokenizer = load_checkpoint(ckpt, "float32", device)
    result = evaluate_task(Scorer(model, tokenizer, batch_size=batch_size, device=device), load_task(data),
                           TaskSettings(bootstrap=1000))
    return time.perf_counter() - start, result["metrics"]["acc"]["value"]


def run_lm_eval(ckpt: Path, data: Path, folder: Path, batch_size: int, device: str) -> tuple[float, float]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from losslens.evaluate.harness import harness_task_yaml

    harness_task_yaml(data, folder, "bench_mc")
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={ckpt},dtype=float32", tasks=["bench_mc"],
        task_manager=TaskManager(include_path=str(folder)), device=device, batch_size=batch_size,
        bootstrap_iters=1000, log_samples=False,
    )
    return time.perf_counter() - start, out["results"]["bench_mc"]["acc,none"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="an HF checkpoint directory (default: a random Llama)")
    p.add_argument("--examples", type=int, default=500)
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--context-chars", type=int, default=200)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=8192, help="rows of the random model's output layer")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    import lm_eval  # noqa: F401  (imports are timed apart from the runs)
    import transformers  # noqa: F401

    import losslens.evaluate.scoring  # noqa: F401
    print(f"imports: {time.perf_counter() - t0:.1f} s (not counted)")

    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    ckpt = args.checkpoint or make_checkpoint(tmp / "ckpt", args.width, args.layers, 512, args.vocab)
    data = make_task(tmp / "bench_mc.jsonl", args.examples, args.choices, args.context_chars)
    n = args.examples
    if not args.checkpoint:
        print(f"random Llama: width {args.width}, {args.layers} layers, vocabulary {args.vocab}")
    print(f"checkpoint: {ckpt}; task: {n} examples x {args.choices} choices; device {args.device}, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")

    run_losslens(ckpt, data, args.batch_size, args.device)  # warm-up: page cache, lazy imports
    ours_s, ours_acc = run_losslens(ckpt, data, args.batch_size, args.device)
    theirs_s, theirs_acc = run_lm_eval(ckpt, data, tmp / "harness", args.batch_size, args.device)
    print(f"losslens: {ours_s:.2f} s, {n / ours_s:.1f} examples/s, acc {ours_acc:.4f}")
    print(f"lm-eval:  {theirs_s:.2f} s, {n / theirs_s:.1f} examples/s, acc {theirs_acc:.4f}")
    print(f"same accuracy: {abs(ours_acc - theirs_acc) < 1e-9}")
    print(f"ratio losslens/lm-eval examples/s: {theirs_s / ours_s:.2f}")


if __name__ == "__main__":
    main()

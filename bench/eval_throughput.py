"""Evaluation throughput: losslens vs lm-evaluation-harness, same checkpoints, same task, alternated.

    .venv/bin/python bench/eval_throughput.py [--checkpoint DIR] [--examples 500] [--rounds 3] [--device cpu]
    .venv/bin/python bench/eval_throughput.py --harness [--checkpoints 8] [--rounds 3]

Without ``--checkpoint`` a randomly initialised Llama (``--width``, ``--layers``, an output layer
of ``--vocab`` rows like a BPE model's) with a character-level tokenizer is saved to a temporary
folder.

Default: a synthetic 4-choice task of ``--examples`` examples with contexts of ~``--context-chars``
characters (a long context, short choices), as a losslens task (losslens' evaluator) and as a local
harness YAML (``lm_eval.simple_evaluate`` on ``hf``). ``--harness``: a sweep of ``--checkpoints``
random checkpoints over a local MMLU-style harness group (5-shot, subjects of ``--examples`` /
4 questions), run as the sweep runs it: natively (lm-eval builds the requests once, losslens
scores them) against every checkpoint through ``simple_evaluate`` (``Harness(native=False)``).

Each tool is timed end to end after its imports (model loading, task loading, scoring, metrics).
The two are alternated, ABAB..., for ``--rounds`` rounds, so that load which changes during the run
falls on both; the report is the median of each, and the last line the ratio of the medians with
the smallest and largest per-round ratio beside it.
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


def make_checkpoint(folder: Path, width: int, layers: int, context: int, vocab_size: int, seed: int = 0) -> Path:
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
    torch.manual_seed(seed)
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


def make_mmlu_style(folder: Path, data: Path, subjects: int, per_subject: int, seed: int = 0) -> str:
    """A local MMLU-style harness group (5-shot from a dev split, letter answers), as docs/lm-eval.md writes it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    template = {
        "dataset_path": "json", "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": 5, "output_type": "multiple_choice",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                       "D. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    names = []
    for i in range(subjects):
        rows = []
        for _ in range(per_subject + 5):
            a, b = int(rng.integers(10, 90)), int(rng.integers(10, 90))
            choices = [str(a + b + d) for d in rng.permutation([0, -1, 1, 10])]
            rows.append({"question": f"What is {a} plus {b}?", "choices": choices, "answer": choices.index(str(a + b))})
        paths = {split: data / split / f"s{i}.jsonl" for split in ("test", "dev")}
        for split, part in (("dev", rows[:5]), ("test", rows[5:])):
            paths[split].parent.mkdir(parents=True, exist_ok=True)
            paths[split].write_text("".join(json.dumps(r) + "\n" for r in part))
        names.append(f"bench_mmlu_s{i}")
        spec = dict(template, task=names[-1], description=f"Questions about sums, part {i}.\n\n",
                    dataset_kwargs={"data_files": {k: str(v) for k, v in paths.items()}})
        (folder / f"{names[-1]}.yaml").write_text(json.dumps(spec))  # JSON is YAML
    group = {"group": "bench_mmlu", "task": names, "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}
    (folder / "_bench_mmlu.yaml").write_text(json.dumps(group))
    return "bench_mmlu"


def sweep_harness(ckpts: list[Path], include: Path, name: str, native: bool, batch_size: int,
                  device: str) -> tuple[float, list[float]]:
    """A sweep of one harness unit over the checkpoints, as ``losslens evaluate`` runs it; seconds and accuracies."""
    from losslens.evaluate.harness import Harness
    from losslens.evaluate.units import CheckpointContext, RunOptions

    start = time.perf_counter()
    settings = {"dtype": "float32", "limit": None, "bootstrap": 1000, "confidence": 0.95}
    (unit,) = Harness([name], include, settings, native=native).tasks
    accs = []
    for ckpt in ckpts:
        context = CheckpointContext(ckpt, RunOptions(batch_size=batch_size, device=device))
        accs.append(unit.run(context)["metrics"]["acc"]["value"])
        context.close()
    return time.perf_counter() - start, accs


def alternate(ours, theirs, rounds: int) -> tuple[list[float], list[float], list, list]:
    """ABAB...: each tool ``rounds`` times, interleaved; seconds and outputs of each."""
    times: tuple[list[float], list[float]] = ([], [])
    outs: tuple[list, list] = ([], [])
    for r in range(rounds):
        for i, run in enumerate((ours, theirs)):
            seconds, out = run()
            times[i].append(seconds)
            outs[i].append(out)
            print(f"round {r + 1}: {'losslens' if i == 0 else 'lm-eval '} {seconds:.2f} s", flush=True)
    return times[0], times[1], outs[0], outs[1]


def report(ours_s: list[float], theirs_s: list[float], units: int, what: str, same: bool) -> None:
    ours, theirs = float(np.median(ours_s)), float(np.median(theirs_s))
    ratios = [t / o for o, t in zip(ours_s, theirs_s)]
    print(f"losslens: median {ours:.2f} s of {len(ours_s)} ({units / ours:.2f} {what}/s)")
    print(f"lm-eval:  median {theirs:.2f} s of {len(theirs_s)} ({units / theirs:.2f} {what}/s)")
    print(f"same accuracy: {same}")
    print(f"ratio losslens/lm-eval {what}/s: {theirs / ours:.2f} (per round {min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, help="an HF checkpoint directory (default: a random Llama)")
    p.add_argument("--harness", action="store_true", help="a sweep over a local MMLU-style harness task")
    p.add_argument("--checkpoints", type=int, default=8, help="checkpoints in the --harness sweep")
    p.add_argument("--rounds", type=int, default=3, help="alternations of the two tools")
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
    if not args.checkpoint:
        print(f"random Llama: width {args.width}, {args.layers} layers, vocabulary {args.vocab}")
    tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    (harness_bench if args.harness else task_bench)(args, tmp, torch.get_num_threads())


def fed_tokens(ckpt: Path, data: Path) -> tuple[int, int]:
    """Tokens each tool feeds the model (approximate: strings tokenized whole, no truncation).

    losslens feeds a context once with every choice but its last token after it. lm-eval feeds
    context + choice per request, minus the last token, and runs requests whose inputs are then
    equal only once (its ``logits_cache``): choices that differ only in their last token share a row.
    Per-token costs being equal, the ratio of these counts is the speed-up the layout allows.
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ckpt)
    ours, theirs = 0, 0
    for line in data.read_text().splitlines():
        row = json.loads(line)
        ctx = tok(row["context"])["input_ids"]
        conts = [tok(row["context"] + c)["input_ids"][len(ctx):] for c in row["choices"]]
        ours += len(ctx) + sum(len(c) - 1 for c in conts)
        theirs += sum(len(ctx) + len(c) - 1 for c in {tuple(c[:-1]): c for c in conts}.values())
    return ours, theirs


def task_bench(args, tmp: Path, threads: int) -> None:
    ckpt = args.checkpoint or make_checkpoint(tmp / "ckpt", args.width, args.layers, 512, args.vocab)
    data = make_task(tmp / "bench_mc.jsonl", args.examples, args.choices, args.context_chars)
    print(f"checkpoint: {ckpt}; task: {args.examples} examples x {args.choices} choices; device {args.device}, "
          f"batch {args.batch_size}, torch threads {threads}")
    ours_tokens, theirs_tokens = fed_tokens(ckpt, data)
    print(f"tokens fed to the model: losslens {ours_tokens}, lm-eval {theirs_tokens} "
          f"(ratio {theirs_tokens / ours_tokens:.2f}: the speed-up at equal cost per token)")
    run_losslens(ckpt, data, args.batch_size, args.device)  # warm-up: page cache, lazy imports
    ours_s, theirs_s, ours_acc, theirs_acc = alternate(
        lambda: run_losslens(ckpt, data, args.batch_size, args.device),
        lambda: run_lm_eval(ckpt, data, tmp / "harness", args.batch_size, args.device), args.rounds)
    report(ours_s, theirs_s, args.examples, "examples", all(abs(a - b) < 1e-9 for a, b in zip(ours_acc, theirs_acc)))


def harness_bench(args, tmp: Path, threads: int) -> None:
    ckpts = [args.checkpoint] * args.checkpoints if args.checkpoint else [
        make_checkpoint(tmp / f"ckpt{i}", args.width, args.layers, 1024, args.vocab, seed=i)
        for i in range(args.checkpoints)]
    subjects = 4
    name = make_mmlu_style(tmp / "harness", tmp / "data", subjects, max(1, args.examples // subjects))
    n = subjects * max(1, args.examples // subjects)
    print(f"sweep: {len(ckpts)} checkpoints x {name} ({subjects} subjects, {n} questions, 5-shot); "
          f"device {args.device}, batch {args.batch_size}, torch threads {threads}")
    sweep_harness(ckpts[:1], tmp / "harness", name, True, args.batch_size, args.device)  # warm-up
    ours_s, theirs_s, ours_acc, theirs_acc = alternate(
        lambda: sweep_harness(ckpts, tmp / "harness", name, True, args.batch_size, args.device),
        lambda: sweep_harness(ckpts, tmp / "harness", name, False, args.batch_size, args.device), args.rounds)
    print(f"accuracy by checkpoint: {[round(a, 4) for a in ours_acc[0]]}")
    report(ours_s, theirs_s, len(ckpts), "checkpoints", ours_acc == theirs_acc)


if __name__ == "__main__":
    main()

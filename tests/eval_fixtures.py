"""A tiny study on disk for the evaluate tests, built without training.

``make_study(root)`` writes the layout the train stage writes (losslens.contracts): ``study.yaml``,
``data/val.bin`` + ``data.json``, and ``<run>/ckpt-<tokens>/`` with a randomly initialised (seeded)
``LlamaForCausalLM``, a character-level ``PreTrainedTokenizerFast`` and ``meta.json``; plus a
multiple-choice and a generative task in ``root/tasks``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from losslens import contracts
from losslens.evaluate.requests import LoglikelihoodRequest, LoglikelihoodResult

ALPHABET = " \n0123456789+-=?.,:abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZé√"
EOS, UNK = "<|endoftext|>", "<unk>"


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {EOS: 0, UNK: 1}
    for ch in ALPHABET:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, unk_token=UNK)


def tiny_model(vocab_size: int, seed: int, width: int = 32, layers: int = 2, context: int = 128) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=2 * width, max_position_embeddings=context,
        bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False, use_cache=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # larger weights than the default init: sharper, more varied predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model.eval()


def save_checkpoint(study_dir: Path, run: str, tokens: int, seed: int, **model_kw) -> Path:
    tok = char_tokenizer()
    model = tiny_model(len(tok), seed, **model_kw)
    ckpt = study_dir / run / contracts.checkpoint_dirname(tokens)
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    n_params = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    meta = {
        "study": "evaltest", "run": run, "size": run.split("_")[0], "budget_tokens": tokens, "step": tokens // 256,
        "tokens": tokens, "n_params": n_params, "n_params_nonembed": n_params - embed, "flops": 6.0 * n_params * tokens,
        "train_loss": 3.0, "val_loss": 3.0, "val_loss_stderr": 0.01, "val_tokens": 512, "config_hash": "x",
    }
    (ckpt / contracts.META_FILE).write_text(json.dumps(meta))
    return ckpt


def score_one(model, tokenizer, request: LoglikelihoodRequest, device: Optional[str] = None) -> LoglikelihoodResult:
    """The scorer's reference: one plain forward pass over ``context + continuation``, no packing or batching."""
    ids = torch.tensor([list(request.context_ids) + list(request.continuation_ids)], device=device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    n_ctx, n = len(request.context_ids), len(request.continuation_ids)
    tgt = ids[0, n_ctx:]
    token_lp = lp[n_ctx - 1 : n_ctx - 1 + n].gather(1, tgt[:, None])[:, 0].double().cpu().numpy()
    greedy = bool((lp[n_ctx - 1 : n_ctx - 1 + n].argmax(1) == tgt).all())
    return LoglikelihoodResult(float(token_lp.sum()), token_lp, greedy)


MC_ROWS = [
    {"context": "2+2=", "choices": ["4", "5", "22", "3"], "answer": 0},
    {"context": "The sky is", "choices": [" blue", " green", " loud"], "answer": 0},
    {"context": "9-3=", "choices": ["6", "7"], "answer": 0},
    {"context": "Caf", "choices": ["é", "e", "a"], "answer": 0},
    {"context": "a b c", "choices": [" d", " e", " f", " g"], "answer": 0},
    {"context": "1+1= ", "choices": ["2", "11"], "answer": 1},
    {"context": "Q: capital of France?\nA:", "choices": [" Paris", " Rome", " Berlin", " Madrid"], "answer": 0},
    {"context": "x", "choices": ["y", "yy", "yyy"], "answer": 2},
]
GEN_ROWS = [
    {"prompt": "2+2=", "reference": "4"},
    {"prompt": "Say hi:", "reference": " hi", "stop": ["\n"]},
    {"prompt": "abc", "reference": "def"},
    {"prompt": "Count: 1 2 3", "reference": " 4 5"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tasks(root: Path) -> list[str]:
    tasks = root / "tasks"
    write_jsonl(tasks / "mc.jsonl", MC_ROWS)
    write_jsonl(tasks / "mc_shots.jsonl", MC_ROWS[:4])
    (tasks / "mc3.yaml").write_text(yaml.safe_dump({
        "name": "mc3", "kind": "multiple_choice", "data": "mc.jsonl", "fewshot_file": "mc_shots.jsonl",
        "num_fewshot": 2, "fewshot_separator": "\n",
    }))
    write_jsonl(tasks / "gen.jsonl", GEN_ROWS)
    (tasks / "gen.yaml").write_text(yaml.safe_dump({"name": "gen", "data": "gen.jsonl", "max_new_tokens": 6}))
    return [str(tasks / "mc.jsonl"), str(tasks / "mc3.yaml"), str(tasks / "gen.yaml")]


def make_study(root: Path, runs: dict[str, list[int]] | None = None, tasks: list[str] | None = None,
               val_tokens: int = 512, context: int = 32) -> Path:
    """A study folder under ``root/study`` with two runs of two checkpoints each (by default)."""
    runs = runs or {"xs_64K": [1024, 4096], "s_64K": [1024, 4096]}
    study_dir = root / "study"
    tok = char_tokenizer()
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abc de 123+=\n")) for _ in range(3000))
    ids = np.asarray(tok(text)["input_ids"], dtype=np.uint16)
    data = study_dir / contracts.DATA_DIR
    data.mkdir(parents=True)
    ids.tofile(data / contracts.VAL_SHARD)
    (data / contracts.DATA_META_FILE).write_text(json.dumps({
        "dtype": "uint16", "vocab_size": len(tok), "eos_id": 0, "train_tokens": 0,
        "val_tokens": int(len(ids)), "val_bytes": len(text.encode("utf-8")),
    }))
    task_specs = write_tasks(root) if tasks is None else tasks
    study = {
        "name": "evaltest", "seed": 0,
        "model": {"context": context, "sizes": {"xs": {"width": 32, "depth": 2, "heads": 4, "ffn": 64}}},
        "data": {"source": "files", "paths": ["unused.txt"], "tokenizer": {"kind": "char"}, "val_tokens": 4096},
        "budgets": [65536],
        "train": {"global_batch": 16, "micro_batch": 8},
        "checkpoints": {"val_tokens": val_tokens},
        "eval": {"tasks": task_specs, "bootstrap": 200},
    }
    (study_dir / contracts.STUDY_FILE).write_text(yaml.safe_dump(study, sort_keys=False))
    for i, (run, token_list) in enumerate(sorted(runs.items())):
        for j, tokens in enumerate(token_list):
            save_checkpoint(study_dir, run, tokens, seed=10 * i + j)
    return study_dir

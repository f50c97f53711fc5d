"""Models of the grid: Llama-style causal LMs built from a config (never downloaded), and their size
and compute accounting.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from losslens.train.config import ModelConfig, ModelSize


def hf_config(size: ModelSize, model_cfg: ModelConfig, vocab_size: int, eos_id: int) -> LlamaConfig:
    context = size.context_or(model_cfg.context)
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=size.width,
        num_hidden_layers=size.depth,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads or size.heads,
        intermediate_size=size.ffn_width(),
        max_position_embeddings=context,
        rope_theta=model_cfg.rope_theta,
        initializer_range=model_cfg.init_std,
        tie_word_embeddings=model_cfg.tie_embeddings,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        # No pad_token_id: it would make end-of-text the embedding's padding_idx, a row fixed at zero that
        # never learns; a window that starts with it then carries an all-zero residual whose RMSNorm
        # gradient (1/sqrt(eps) per norm) overflows at ~350M (NaN gradients by step 8 on an H200).
        attn_implementation=model_cfg.attention,
        use_cache=False,
    )


def build_model(size: ModelSize, model_cfg: ModelConfig, vocab_size: int, eos_id: int, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the same seed gives the same weights."""
    config = hf_config(size, model_cfg, vocab_size, eos_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, non-embedding parameters).

    Non-embedding excludes the input embedding and the output (unembedding) matrix, as in Kaplan et
    al. 2020; a tied matrix is counted once in the total.
    """
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    embedding = embed.numel() + (0 if out is embed else out.numel())
    return total, total - embedding

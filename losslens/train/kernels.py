"""Fused GPU kernels for the trained Llama (``train.kernels``): Liger-Kernel's RMSNorm, RoPE, SwiGLU
and fused linear cross-entropy, from the optional extra ``losslens[gpu]``.

The kernels replace modules and functions of the model in memory only: parameter names and shapes
stay those of ``LlamaForCausalLM``, so checkpoints remain plain HF Llama, loadable without Liger.
Liger patches transformers' Llama module (RoPE, and the classes of models built later) for the whole
process, so it is applied once per process, to every model built after it, not undone.
"""

from __future__ import annotations

import importlib.util

import torch

from losslens.errors import ConfigError

LIGER_MODULE = "liger_kernel"


def liger_available() -> bool:
    """The package is installed (importing it needs triton and a GPU build, so only look)."""
    return importlib.util.find_spec(LIGER_MODULE) is not None


def use_liger(setting: str, device: torch.device, compiled: bool = False, source: str = "train.kernels") -> bool:
    """Resolve ``auto|liger|none`` for this process; ``liger`` without CUDA or the package is an error.

    ``auto`` leaves Liger out of compiled models: under torch.compile its fused linear cross-entropy
    failed in Dynamo's fake-tensor pass on an H200 (torch 2.11, triton 3.6, liger-kernel 0.8.5;
    bench/RESULTS.md), and Inductor already fuses the elementwise work that Liger's kernels replace.
    """
    if setting == "none":
        return False
    on_cuda = device.type == "cuda"
    if setting == "auto":
        return on_cuda and not compiled and liger_available()
    if not on_cuda:
        raise ConfigError(f"{source}: liger needs a CUDA device, and this process runs on {device.type} "
                          "(set train.kernels: auto or none)")
    if not liger_available():
        raise ConfigError(f"{source}: liger is not installed: pip install 'losslens[gpu]' "
                          "(or set train.kernels: auto or none)")
    return True


def apply_liger(model: torch.nn.Module) -> None:
    """Swap the model's RMSNorm, SwiGLU MLP and RoPE for Liger's, and its forward for the fused
    linear cross-entropy one (the loss comes from ``model(input_ids, shift_labels=...).loss``)."""
    try:
        from liger_kernel.transformers import apply_liger_kernel_to_llama
    except ImportError as e:  # e.g. triton missing or built for another torch
        raise ConfigError(f"train.kernels: liger: cannot import {LIGER_MODULE} ({e})") from None
    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=True, model=model)

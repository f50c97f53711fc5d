"""Model FLOP utilisation: achieved training FLOP/s over the device's peak dense FLOP/s.

The denominator comes from vendor datasheets (dense, no sparsity), by device name and compute
dtype. Unknown devices (and CPUs) have no entry: give ``train.peak_flops`` to get an MFU there.
"""

from __future__ import annotations

from typing import Optional

import torch

# Peak dense tensor FLOP/s per device: (bf16/fp16, tf32 for fp32 matmuls).
# Sources: NVIDIA H100/H200/A100/L4/A10/L40S datasheets; AMD MI300X datasheet.
_PEAKS: list[tuple[str, float, float]] = [
    ("H200", 989e12, 494.5e12),
    ("H100 NVL", 835e12, 417.5e12),
    ("H100 PCIe", 756e12, 378e12),
    ("H100", 989e12, 494.5e12),  # SXM
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("MI300X", 1307e12, 653.7e12),
]


def peak_flops_per_device(device_name: str, dtype: torch.dtype) -> Optional[float]:
    """Peak dense FLOP/s of one device for matmuls in ``dtype``; None when unknown.

    ``device_name`` is what ``torch.cuda.get_device_name()`` returns, e.g. "NVIDIA H100 80GB HBM3".
    More specific names come first in the table ("H100 PCIe" before "H100").
    """
    name = device_name.upper()
    for key, low_precision, tf32 in _PEAKS:
        if key.upper() in name:
            return low_precision if dtype in (torch.bfloat16, torch.float16) else tf32
    return None


def device_peak_flops(device: torch.device, dtype: torch.dtype, override: Optional[float] = None) -> Optional[float]:
    if override:
        return override
    if device.type == "cuda":
        return peak_flops_per_device(torch.cuda.get_device_name(device), dtype)
    return None


def mfu(flops_per_token: float, tokens_per_second_per_device: float, peak: Optional[float]) -> Optional[float]:
    """Fraction of peak: flops_per_token * tokens/s (one device) / peak FLOP/s."""
    if not peak:
        return None
    return flops_per_token * tokens_per_second_per_device / peak

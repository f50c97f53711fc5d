"""Token and parameter counts as short text (exact for names, rounded for display); training FLOPs per token.

``format_count`` names runs (``m_4M``, ``m_1.5M``), so it never rounds: a count it cannot write exactly
with a suffix it writes in full. ``count_label`` labels tables, legends and ticks, where two significant
digits read better than an exact number.
"""

from __future__ import annotations


def format_count(n: int) -> str:
    """Short label for a token count: 4000000 -> '4M', 1500000 -> '1.5M', 512 -> '512'."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale and (n * 100) % scale == 0:
            return f"{n / scale:g}{suffix}"
    return str(n)


def count_label(n: float) -> str:
    """Short label for a count: 812345 -> '0.81M', 4.2e6 -> '4.2M', 32768 -> '33K', 1.5e9 -> '1.5B',
    650.573 -> '651' (a forecast of tokens is a count, not a measurement to three decimals)."""
    for suffix, scale, floor in (("T", 1e12, 1e12), ("B", 1e9, 1e9), ("M", 1e6, 1e5), ("K", 1e3, 1e3)):
        if n >= floor:
            v = n / scale
            return f"{v:.0f}{suffix}" if v >= 100 else f"{v:.2g}{suffix}"
    return f"{n:.0f}" if abs(n) >= 10 else f"{n:.2g}"


def flops_per_token(n_params_nonembed: int, width: int, depth: int, context: int, vocab_size: int) -> float:
    """Training FLOPs per token: 6 * N + 12 * depth * width * context (PaLM, appendix B).

    ``N`` counts every matrix multiplied per token: the non-embedding parameters plus the output
    projection (``width * vocab``); the input embedding is a lookup. The second term is the attention
    scores and weighted sum (QK^T and AV, forward and backward) without causal-mask savings.
    """
    n_matmul = n_params_nonembed + width * vocab_size
    return 6.0 * n_matmul + 12.0 * depth * width * context

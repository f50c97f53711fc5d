"""Typed configuration of the training stage (model grid, data, loop, checkpoints).

Plain dataclasses with defaults that suit a small study; ``losslens.config`` reads them from
YAML and validates the combinations. Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from losslens.contracts import seed_label
from losslens.schema import NOT_NEGATIVE, Length, NonNegativeInt, PositiveFloat, PositiveInt, Range, SeedInt, Threads
from losslens.tracking import TRACKERS

# Bounds beyond which a setting is a typo, not a study: a model this wide, deep or long-context would not fit
# any machine.
MAX_WIDTH = 2**17
MAX_DEPTH = 2**12
MAX_CONTEXT = 2**20
MAX_CHECKPOINTS = 100_000  # per run: each holds a whole model
Width = Annotated[int, Range(gt=0, le=MAX_WIDTH)]
Context = Annotated[int, Range(gt=0, le=MAX_CONTEXT)]


@dataclass(frozen=True)
class Seed:
    """One replicate of the grid: the seed of the model's initialisation and the seed of the data order.

    Written ``N`` (both N) or ``{init: I, data: D}``: equal ``data`` seeds read the same windows in the
    same order, so ``{init: 1, data: 0}`` and ``{init: 2, data: 0}`` differ only in initialisation.
    """

    init: SeedInt
    data: SeedInt

    @property
    def label(self) -> str:
        """``"1"``, or ``"init1-data0"`` when the two seeds differ (results.csv's ``seed`` column)."""
        return seed_label(self.init, self.data)


@dataclass
class ModelSize:
    """One model of the grid: a Llama-style decoder."""

    width: Width  # hidden size d_model
    depth: Annotated[int, Range(gt=0, le=MAX_DEPTH)]  # number of layers
    heads: Width  # attention heads (head dim = width / heads)
    # MLP inner width; default 8/3 * width rounded up to a multiple of 32
    ffn: Optional[Annotated[int, Range(gt=0, le=8 * MAX_WIDTH)]] = None
    kv_heads: Optional[Width] = None  # grouped-query attention; default = heads
    context: Optional[Context] = None  # default: model.context

    def ffn_width(self) -> int:
        return self.ffn or -(-int(8 * self.width / 3) // 32) * 32

    def context_or(self, default: int) -> int:
        return self.context or default


# Ready-made ladders. The "tiny-*" sizes train on a laptop CPU; the others follow Pythia's widths
# and depths (with Llama blocks) for GPU studies.
PRESET_SIZES: dict[str, ModelSize] = {
    "tiny-xs": ModelSize(width=64, depth=2, heads=4, ffn=192),
    "tiny-s": ModelSize(width=96, depth=3, heads=4, ffn=256),
    "tiny-m": ModelSize(width=128, depth=3, heads=4, ffn=352),
    "tiny-l": ModelSize(width=192, depth=4, heads=6, ffn=512),
    "14m": ModelSize(width=128, depth=6, heads=4, ffn=512),
    "31m": ModelSize(width=256, depth=6, heads=8, ffn=1024),
    "70m": ModelSize(width=512, depth=6, heads=8, ffn=2048),
    "160m": ModelSize(width=768, depth=12, heads=12, ffn=3072),
    "410m": ModelSize(width=1024, depth=24, heads=16, ffn=4096),
    "1b": ModelSize(width=2048, depth=16, heads=8, ffn=8192),
}


@dataclass
class ModelConfig:
    context: Context = 256  # sequence length (tokens) unless a size sets its own
    sizes: dict[str, ModelSize] = field(default_factory=dict)
    ladder: list[Literal[tuple(PRESET_SIZES)]] = field(default_factory=list)  # type: ignore[valid-type]
    tie_embeddings: bool = False
    init_std: PositiveFloat = 0.02
    rope_theta: PositiveFloat = 10000.0
    attention: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"

    def resolved_sizes(self) -> dict[str, ModelSize]:
        """Named sizes from ``sizes`` and ``ladder``, smallest first (by width x depth)."""
        sizes = {name: PRESET_SIZES[name] for name in self.ladder}
        sizes.update(self.sizes)
        return dict(sorted(sizes.items(), key=lambda kv: (kv[1].width * kv[1].width * kv[1].depth, kv[0])))


# A BPE starts from the 256 byte symbols plus end-of-text and <unk>; beyond 2^20 tokens the embedding
# dwarfs any model this tool trains, and the Rust trainer allocates per requested token up front.
MIN_BPE_VOCAB = 258
MAX_VOCAB = 2**20


@dataclass
class TokenizerConfig:
    kind: Literal["bpe", "byte", "char", "pretrained"] = "bpe"
    vocab_size: PositiveInt = 8192  # for "bpe": the merges stop here (bounds: MIN_BPE_VOCAB, MAX_VOCAB)
    path: Optional[str] = None  # for "pretrained": a local HF tokenizer directory


@dataclass
class DataConfig:
    source: str = "files"  # "files", or a registered generator such as "demo"
    paths: list[str] = field(default_factory=list)  # .txt / .jsonl / .parquet files (or globs)
    text_field: str = "text"  # the column of .jsonl / .parquet files
    generator: dict = field(default_factory=dict)  # options of a generator source
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    val_tokens: PositiveInt = 65536  # size of the held-out validation shard
    val_every: PositiveInt = 50  # every k-th document goes to validation until it holds val_tokens
    encode_batch: PositiveInt = 512  # documents per (parallel, Rust-side) tokenizer batch


@dataclass
class ScheduleConfig:
    kind: Literal["cosine", "wsd"] = "cosine"
    warmup: Annotated[float, Range(ge=0, lt=1, what="a fraction of the run")] = 0.02  # of the run's steps
    min_lr_ratio: Annotated[float, Range(ge=0, le=1, what="final LR / peak LR")] = 0.1
    # wsd: fraction of each budget spent decaying from the stable LR (more than 0 for wsd: losslens.config)
    cooldown: Annotated[float, Range(ge=0, lt=1, what="a fraction of each budget")] = 0.2
    decay_type: Literal["cosine", "linear", "1-sqrt"] = "1-sqrt"  # wsd cooldown shape


@dataclass
class OptimizerConfig:
    lr: PositiveFloat = 3e-4
    betas: Annotated[list[Annotated[float, Range(ge=0, lt=1, what="an AdamW beta")]], Length(2)] = field(
        default_factory=lambda: [0.9, 0.95])
    weight_decay: Annotated[float, NOT_NEGATIVE] = 0.1
    eps: PositiveFloat = 1e-8
    grad_clip: Annotated[float, NOT_NEGATIVE] = 1.0  # 0 disables clipping
    fused: Optional[bool] = None  # None: fused AdamW where the device supports it


@dataclass
class TrainConfig:
    global_batch: PositiveInt = 32  # sequences per optimizer step, over all processes
    micro_batch: PositiveInt = 8  # sequences per forward pass per process
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    compile: bool = False
    kernels: Literal["auto", "liger", "none"] = "auto"  # fused Liger kernels; auto: on with CUDA + losslens[gpu], off when compiled
    log_every: PositiveInt = 10  # steps; the only host syncs of the loop happen here
    # Experiment trackers, through accelerate's (losslens.tracking); not in the config hash.
    trackers: list[Literal[TRACKERS]] = field(default_factory=list)  # type: ignore[valid-type]
    tensorboard: bool = False  # the older spelling of trackers: [tensorboard]
    peak_flops: Optional[PositiveFloat] = None  # per device, for MFU; default from a table of GPUs
    on_nonfinite: Literal["stop", "skip"] = "stop"
    threads: Optional[Threads] = None  # torch CPU threads per process

    def tracker_names(self) -> list[str]:
        """``trackers``, with ``tensorboard: true`` read as naming TensorBoard."""
        return list(dict.fromkeys(self.trackers + (["tensorboard"] if self.tensorboard else [])))


@dataclass
class CheckpointConfig:
    count: Annotated[int, Range(ge=0, le=MAX_CHECKPOINTS)] = 10  # evenly spaced checkpoints per run (the last at the budget)
    every: NonNegativeInt = 0  # tokens between checkpoints; overrides count when > 0
    log_spaced: bool = True  # also early ones at 2^k steps, like Pythia's
    at: Annotated[list[NonNegativeInt], Length(most=MAX_CHECKPOINTS)] = field(default_factory=list)  # extra token counts
    val_tokens: PositiveInt = 32768  # validation tokens measured at each save
    val_batch: PositiveInt = 16  # sequences per validation forward pass
    keep_train_state: Literal["all", "last"] = "last"  # optimizer state of older checkpoints is pruned

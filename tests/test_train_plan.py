"""Run plans: checkpoint cadence, WSD branch points and schedules, MFU denominators."""

from __future__ import annotations

import pytest
import torch

from losslens.config import load_study
from losslens.train.mfu import mfu, peak_flops_per_device
from losslens.counts import flops_per_token
from losslens.train.model import build_model, parameter_counts
from losslens.train.plan import plan_runs
from losslens.train.schedule import learning_rate, lr_factor
from tests.conftest import TINY


def test_grid_has_every_size_and_budget():
    plans = plan_runs(load_study(TINY))
    assert [p.name for p in plans] == ["xs_65536", "xs_32768", "s_65536", "s_32768"]
    assert all(p.tokens_per_step == 16 * 32 for p in plans)
    assert plans[0].total_steps == 128 and plans[1].total_steps == 64


def test_checkpoint_cadence_linear_plus_log_spaced():
    plan = plan_runs(load_study(TINY))[0]  # 128 steps, count 4, log-spaced
    assert plan.checkpoint_steps == (1, 2, 4, 8, 16, 32, 64, 96, 128)
    every = plan_runs(load_study(TINY, ["checkpoints.every=16384", "checkpoints.log_spaced=false",
                                        "checkpoints.at=[1024]"]))[0]
    assert [every.tokens_at(s) for s in every.checkpoint_steps] == [1024, 16384, 32768, 49152, 65536]


def test_wsd_branches_from_the_trunk():
    study = load_study(TINY, ["train.schedule.kind=wsd", "train.schedule.cooldown=0.25"])
    trunk, branch = plan_runs(study)[:2]
    assert trunk.branch is None and trunk.decay_start == 96
    assert branch.branch.trunk == trunk.name and branch.branch.step == 48 == branch.decay_start
    assert 48 in trunk.checkpoint_steps and trunk.keep_state_steps == (48,)
    assert min(branch.checkpoint_steps) > 48 and branch.checkpoint_steps[-1] == 64
    assert trunk.warmup_steps == branch.warmup_steps


def test_wsd_branch_lr_equals_trunk_lr_until_it_decays():
    study = load_study(TINY, ["train.schedule.kind=wsd", "train.schedule.cooldown=0.25"])
    trunk, branch = plan_runs(study)[:2]
    lrs = {plan.name: [lr_factor(s, study.train.schedule, plan) for s in range(plan.total_steps + 1)]
           for plan in (trunk, branch)}
    assert lrs[trunk.name][:49] == lrs[branch.name][:49]
    assert lrs[branch.name][64] == pytest.approx(study.train.schedule.min_lr_ratio)
    assert lrs[trunk.name][64] == 1.0


def test_parameter_counts_and_flops():
    study = load_study(TINY)
    size = study.model.resolved_sizes()["s"]
    model = build_model(size, study.model, vocab_size=40, eos_id=0, seed=0)
    total, nonembed = parameter_counts(model)
    assert total - nonembed == 2 * 40 * 48  # untied input and output matrices
    # per layer: 4 attention matrices + 3 MLP matrices + 2 norms; plus the final norm
    assert nonembed == 2 * (4 * 48 * 48 + 3 * 48 * 96 + 2 * 48) + 48
    assert flops_per_token(nonembed, 48, 2, 32, 40) == 6 * (nonembed + 48 * 40) + 12 * 2 * 48 * 32


def test_end_of_text_embedding_is_an_ordinary_trainable_row():
    # As the embedding's padding row it was fixed at zero: a window starting with it kept an all-zero
    # residual whose norm gradients overflowed at ~350M (NaN by step 8 on an H200, bench/RESULTS.md).
    study = load_study(TINY)
    size = study.model.resolved_sizes()["xs"]
    model = build_model(size, study.model, vocab_size=40, eos_id=3, seed=0)
    assert model.model.embed_tokens.padding_idx is None
    assert model.model.embed_tokens.weight[3].norm() > 0
    ids = torch.tensor([[3, 5, 7, 3, 9, 11]])
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.model.embed_tokens.weight.grad[3].norm() > 0


def test_peak_flops_table():
    assert peak_flops_per_device("NVIDIA H100 80GB HBM3", torch.bfloat16) == 989e12
    assert peak_flops_per_device("NVIDIA H100 PCIe", torch.bfloat16) == 756e12
    assert peak_flops_per_device("NVIDIA A100-SXM4-80GB", torch.bfloat16) == 312e12
    assert peak_flops_per_device("NVIDIA A100-SXM4-80GB", torch.float32) == 156e12
    assert peak_flops_per_device("NVIDIA H200", torch.bfloat16) == 989e12
    assert peak_flops_per_device("Some CPU", torch.float32) is None
    assert mfu(1e9, 1000.0, 1e13) == pytest.approx(0.1)
    assert mfu(1e9, 1000.0, None) is None


@pytest.mark.parametrize("schedule", [
    ["train.schedule.kind=cosine", "train.schedule.warmup=0.1"],
    ["train.schedule.kind=wsd", "train.schedule.cooldown=0.25", "train.schedule.decay_type=1-sqrt"],
    ["train.schedule.kind=wsd", "train.schedule.cooldown=0.3", "train.schedule.decay_type=linear"],
    ["train.schedule.kind=wsd", "train.schedule.cooldown=0.2", "train.schedule.decay_type=cosine"],
])
def test_lr_is_a_pure_function_of_the_step_equal_to_transformers_schedules(schedule):
    """The loop's LR of step s equals (bitwise) what transformers' LambdaLR gave after s steps."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

    study = load_study(TINY, schedule)
    cfg = study.train.schedule
    for plan in plan_runs(study)[:2]:  # a trunk and (wsd) its branch
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
        if cfg.kind == "cosine":
            sched = get_cosine_with_min_lr_schedule_with_warmup(opt, plan.warmup_steps, plan.total_steps,
                                                                min_lr_rate=cfg.min_lr_ratio)
        else:
            sched = get_wsd_schedule(opt, num_warmup_steps=plan.warmup_steps,
                                     num_stable_steps=plan.decay_start - plan.warmup_steps,
                                     num_decay_steps=plan.total_steps - plan.decay_start,
                                     decay_type=cfg.decay_type, min_lr_ratio=cfg.min_lr_ratio)
        replayed = []
        for _ in range(plan.total_steps + 1):
            replayed.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert [learning_rate(s, 3e-3, cfg, plan) for s in range(plan.total_steps + 1)] == replayed

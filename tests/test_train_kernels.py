"""train.kernels: Liger's fused kernels are optional, resolved per process, and off on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from losslens import cli
from losslens.config import load_study
from losslens.errors import ConfigError
from losslens.train import kernels, loop
from losslens.train.plan import plan_runs
from losslens.train.study import make_accelerator, prepare_study_dir
from tests.conftest import TINY, write_study


def test_kernels_option_is_typed_with_auto_as_default():
    assert load_study(TINY).train.kernels == "auto"
    assert load_study(TINY, ["train.kernels=none"]).train.kernels == "none"
    with pytest.raises(ConfigError, match="train.kernels"):
        load_study(TINY, ["train.kernels=fast"])


def test_auto_is_off_without_cuda_and_none_is_always_off():
    assert kernels.use_liger("auto", torch.device("cpu")) is False
    assert kernels.use_liger("none", torch.device("cuda")) is False
    assert kernels.use_liger("auto", torch.device("cuda")) is kernels.liger_available()
    assert kernels.use_liger("auto", torch.device("cuda"), compiled=True) is False  # failed under compile on an H200


def test_liger_without_cuda_or_package_is_a_one_line_error():
    with pytest.raises(ConfigError, match="train.kernels: liger needs a CUDA device"):
        kernels.use_liger("liger", torch.device("cpu"))
    if not kernels.liger_available():
        with pytest.raises(ConfigError, match=r"liger is not installed: pip install 'losslens\[gpu\]'"):
            kernels.use_liger("liger", torch.device("cuda"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_liger_on_cpu_exits_2_naming_the_file_and_field(tmp_path: Path, capsys):
    cfg = write_study(tmp_path, train__kernels="liger")
    assert cli.main(["train", str(cfg), "--run", "xs_32768"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{cfg}: train.kernels: liger needs a CUDA device" in lines[0], lines[0]
    assert not list((tmp_path / "study").glob("*/ckpt-*"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_auto_on_cpu_trains_the_plain_hf_llama(tmp_path: Path):
    """With ``auto`` on a CPU the loop computes its own loss on the plain modules (so the golden curve,
    trained with the default ``auto``, is the kernels-off curve)."""
    study = load_study(write_study(tmp_path))
    accelerator = make_accelerator(study)
    run = loop.set_up(study, plan_runs(study)[0], accelerator, prepare_study_dir(study, accelerator))
    assert run.fused_loss is False
    # Liger patches instances in place and renames them through _get_name (their class stays)
    names = {m._get_name() for m in run.model.modules()}
    assert {"LlamaRMSNorm", "LlamaMLP"} <= names and not any("Liger" in n for n in names)
    assert "forward" not in vars(run.model)  # the fused-loss forward is bound on the instance


def test_liger_keeps_the_checkpoint_a_plain_hf_llama(tmp_path: Path):
    """Patched modules keep their parameter names and shapes, so saved weights load without Liger.
    (Needs liger-kernel and triton: runs where ``losslens[gpu]`` is installed.)"""
    pytest.importorskip("liger_kernel.transformers")
    from transformers import LlamaForCausalLM

    from losslens.train.model import build_model

    study = load_study(TINY)
    model = build_model(study.model.resolved_sizes()["xs"], study.model, vocab_size=40, eos_id=0, seed=0)
    before = {k: v.shape for k, v in model.state_dict().items()}
    kernels.apply_liger(model)
    assert {"LigerRMSNorm", "LigerSwiGLUMLP"} <= {m._get_name() for m in model.modules()}
    assert {k: v.shape for k, v in model.state_dict().items()} == before
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    assert set(reloaded.state_dict()) == set(before)

"""Data-parallel training: two torchrun processes (gloo on CPU, nccl on GPUs), unchanged code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dldl_core.checkpoint import read_card

ROOT = Path(__file__).resolve().parent.parent


def _train(tmp_path, name: str, processes: int, batch_size: int, *extra: str) -> dict:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    # No augmentation, dropout or batch-norm updates: nothing random or per-rank is left, so a
    # data-parallel run must follow the single-process run with the same global batch.
    cmd = [sys.executable, *launcher, "-m", "train.age", "--out", str(tmp_path / name), "--limit", "64", "--val-limit", "16",
           "--batch-size", str(batch_size), "--image-size", "64", "--template-chips", "2", "--no-pretrained", "--skip-test",
           "--epochs", "1", "--no-augment", "--dropout", "0", "--freeze-bn", "--cache-dir", str(tmp_path / "cache"),
           "--warmup-epochs", "0", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(tmp_path / name / "age.safetensors"))


def test_two_cpu_processes_match_one_process(tmp_path, utkface_test):
    """Both ranks end in sync, and where a single process with the same global batch (32) ends."""
    ddp = _train(tmp_path, "ddp", processes=2, batch_size=16)
    card = read_card(tmp_path / "ddp" / "age.safetensors")
    assert card.training["processes"] == 2 and card.training["ranks_in_sync"] is True
    single = _train(tmp_path, "single", processes=1, batch_size=32)
    other = _train(tmp_path, "other_batches", processes=1, batch_size=16)  # same start, other batches
    assert all(torch.isfinite(v).all() for v in ddp.values())

    def gap(a: dict, b: dict) -> float:
        return max(float((a[k] - b[k]).abs().max()) for k in a if a[k].is_floating_point())

    print(f"max |w_ddp - w_single| = {gap(ddp, single):.2e}, max |w_batch16 - w_single| = {gap(other, single):.2e}")
    # The DDP run differs from the single run by float rounding only; taking other batches from the
    # same start (what a wrong split of the global batch would do) moves the weights far more.
    assert gap(ddp, single) < 1e-4
    assert gap(other, single) > 20 * gap(ddp, single)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (nccl); the CPU case above runs everywhere")
def test_two_gpu_processes_stay_in_sync(tmp_path, utkface_test):
    weights = _train(tmp_path, "nccl", 2, 16, "--device", "cuda")
    training = read_card(tmp_path / "nccl" / "age.safetensors").training
    assert training["processes"] == 2 and training["ranks_in_sync"] is True
    assert training["device"] == torch.cuda.get_device_name(0)
    assert all(torch.isfinite(v).all() for v in weights.values())

"""Data-parallel training on CPU: two torchrun processes (gloo), unchanged code."""

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from dldl_core.checkpoint import read_card

ROOT = Path(__file__).resolve().parent.parent


def test_two_cpu_processes_train_in_sync(tmp_path, utkface_test):
    """Both ranks end with the same parameters (gradients are all-reduced every step)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.age", "--out", str(tmp_path / "ddp"), "--limit", "64", "--val-limit", "16", "--batch-size", "16",
           "--image-size", "64", "--template-chips", "2", "--no-pretrained", "--skip-test", "--epochs", "1",
           "--no-augment", "--dropout", "0", "--cache-dir", str(tmp_path / "cache"), "--warmup-epochs", "0"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    card = read_card(tmp_path / "ddp" / "age.safetensors")
    assert card["training"]["processes"] == 2 and card["training"]["ranks_in_sync"] is True
    assert card["training"]["history"][0]["epoch"] == 1
    weights = load_file(str(tmp_path / "ddp" / "age.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())

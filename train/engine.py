"""The one training loop every task shares.

A task (``train.age``, ...) says what the data, model, loss and metrics are;
this module does the rest the same way for all of them: device choice, AMP on
CUDA, data-parallel training under ``torchrun`` (DDP, gloo on CPU, nccl on
GPU), warm-up plus cosine learning rate, tqdm progress, validation every
epoch, the best checkpoint kept, resuming from ``last.pt`` after an
interruption, one final test evaluation and the model card.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dldl_core.checkpoint import save_checkpoint
from dldl_core.models import build_model
from dldl_core.transforms import IMAGENET_MEAN, IMAGENET_STD


def opt(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A config field with its command-line help (and the values it may take)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Options every task has; a task's config subclasses this and adds its own."""

    data: str | None = opt(None, "data folder; default $DLDL_DATA or ../shared/data")
    out: str = opt("runs/task", "run folder: last.pt, the best weights and their card")
    epochs: int = opt(10, "training epochs")
    batch_size: int = opt(64, "per process")
    lr: float = opt(1e-3, "peak learning rate (AdamW, linear warm-up then cosine decay)")
    weight_decay: float = opt(1e-4, "AdamW weight decay (not on biases and norms)")
    warmup_epochs: float = opt(0.5, "epochs of linear learning-rate warm-up")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto = cuda when present, else cpu")
    amp: bool = opt(True, "mixed precision, used on CUDA only")
    limit: int = opt(0, "train on the first N training rows only (0 = all); for smoke tests")
    backbone: str = opt("mobilenet_v2", "backbone name (dldl_core.backbones.BACKBONES)")
    pretrained: bool = opt(True, "start from the backbone's ImageNet weights")
    init: str | None = opt(None, "start from the weights of this trained checkpoint (.safetensors of the same task and model) instead")
    dropout: float = opt(0.2, "dropout before the distribution heads")
    val_limit: int = opt(0, "evaluate on the first N val rows only (0 = all)")
    skip_test: bool = opt(False, "do not evaluate on the test split at the end")
    resume: bool = opt(False, "continue from out/last.pt")
    cache_dir: str | None = opt(None, "decoded-image cache; default ~/.cache/dldl")
    backbone_lr_scale: float = opt(1.0, "the backbone's learning rate as a fraction of lr (0 = frozen backbone, a linear probe)")
    freeze_bn: bool = opt(False, "keep batch-norm statistics fixed while training (then data-parallel runs match one process exactly)")
    keep: str = opt("best", "the weights kept: the best epoch on val, or the last epoch (val is then only reported)", ("best", "last"))


class Task:
    """What a task defines. Images are uint8 arrays (N, H, W, 3); labels a float tensor."""

    name = "task"
    config: TrainConfig
    higher_is_better = False  # for the selection metric ``score``

    def heads(self) -> dict[str, Any]:
        """The model's distribution heads, as ``DistributionNet`` takes them (and the card records them)."""
        raise NotImplementedError

    def model_spec(self) -> dict[str, Any]:
        """The card's ``model`` section, from which ``dldl_core.models.build_model`` rebuilds the network."""
        c = self.config
        return {"backbone": c.backbone, "heads": self.heads(), "dropout": c.dropout}

    def build_model(self, pretrained: bool) -> nn.Module:
        return build_model(self.model_spec(), pretrained)

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        """Images and labels of one split; only its first ``limit`` rows when ``limit`` > 0."""
        raise NotImplementedError

    def prepare(self, images: np.ndarray) -> None:
        """Anything measured on the training images before training (rank 0 only)."""

    def extra_state(self) -> dict[str, Any]:
        """What ``prepare`` measured, kept in last.pt so a resumed run has it too."""
        return {}

    def load_extra(self, extra: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def train_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch on the device -> augmented, normalised float batch, and the labels to match
        (an augmentation such as a mirror image may change them)."""
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> dict[str, float]:
        """Metrics on one split; must include ``score``, the selection metric."""
        raise NotImplementedError

    def calibrate(self, model: nn.Module, images: np.ndarray, labels: torch.Tensor, device: torch.device) -> None:
        """Post-hoc calibration on the validation split (e.g. a temperature); default none."""

    def card(self) -> dict[str, Any]:
        """The task's sections of the model card (input, bins or classes, readout, data); the
        engine adds the model, training and metrics sections."""
        raise NotImplementedError


def input_card(size: int, crop: dict[str, Any]) -> dict[str, Any]:
    """The card's ``input`` section: how a predictor must crop, size and normalise an image."""
    return {"size": size, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "crop": crop}


def parse_config(cls: type[TrainConfig], argv: list[str] | None = None, prog: str | None = None) -> TrainConfig:
    """Command-line options generated from the config dataclass's fields."""
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help = f.metadata.get("help", "")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            kind = {int: int, float: float}.get(type(f.default), str)
            parser.add_argument(flag, type=kind, default=f.default, help=help, choices=f.metadata.get("choices"))
    return cls(**vars(parser.parse_args(argv)))


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(cfg: TrainConfig) -> tuple[_Dist, torch.device]:
    d = _Dist(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))
    want = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if want == "cuda":
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    else:
        device = torch.device(want)
    if d.world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    return d, device


def _lr_lambda(warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def fit(task: Task) -> dict[str, Any]:
    """Train ``task`` as its config says; returns the final model card (rank 0) or {}."""
    cfg = task.config
    d, device = _setup(cfg)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed + d.rank)  # DDP copies rank 0's initial weights; augmentation differs per rank
    np.random.seed(cfg.seed + d.rank)

    last = out / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if cfg.resume and last.is_file() else None
    if cfg.resume and state is None and d.main:
        print(f"no {last} to resume from; starting afresh", file=sys.stderr)

    # The model first: a missing ImageNet weights package is reported before minutes of data loading.
    model = task.build_model(pretrained=cfg.pretrained and state is None and not cfg.init)
    if cfg.init and state is None:
        from dldl_core.checkpoint import load_checkpoint

        start, _ = load_checkpoint(cfg.init)
        model.load_state_dict(start.state_dict())
    # channels-last is about twice as fast on CPU (oneDNN) and what tensor cores want on GPU.
    model = model.to(device, memory_format=torch.channels_last)

    train_x, train_y = task.load_split("train", cfg.limit)
    val_x, val_y = task.load_split("val", cfg.val_limit)
    if state is None and d.main:
        task.prepare(train_x)
    elif state is not None:
        task.load_extra(state.get("extra", {}))
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None) if d.world > 1 else model

    steps_per_epoch = len(train_x) // (cfg.batch_size * d.world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_x)} training rows are fewer than one global batch of {cfg.batch_size * d.world}")
    total = steps_per_epoch * cfg.epochs
    if cfg.backbone_lr_scale == 0:  # a linear probe: no gradient through the backbone at all
        model.backbone.requires_grad_(False)
    groups = []
    for part, scale in ((model.backbone, cfg.backbone_lr_scale), (model.heads, 1.0)):
        params = [p for p in part.parameters() if p.requires_grad]
        groups.append({"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": cfg.lr * scale})
        groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": cfg.lr * scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(max(1, int(cfg.warmup_epochs * steps_per_epoch)), total))
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, history = 0, None, []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, history = state["epoch"], state["best"], list(state["history"])
        if "rng" in state:  # augmentation continues as the uninterrupted run's would
            torch.set_rng_state(state["rng"])
        if d.main:
            print(f"resumed from {last} after epoch {start_epoch}", file=sys.stderr)

    weights_path = out / f"{task.name}.safetensors"
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if cfg.freeze_bn:
            for m in model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # same order on every rank
        perm = torch.randperm(len(train_x), generator=g)
        glob = cfg.batch_size * d.world
        t0, seen, running = time.time(), 0, 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not d.main, mininterval=10, file=sys.stderr)
        for step in bar:
            # Each step's global batch is the same as a single process with the global batch size
            # would take; every rank gets its share of it.
            idx = np.sort(perm[step * glob : (step + 1) * glob][d.rank :: d.world].numpy())
            images, labels = torch.from_numpy(np.ascontiguousarray(train_x[idx])), train_y[idx]
            if device.type == "cuda":  # page-locked, so the copies below run asynchronously
                images, labels = images.pin_memory(), labels.pin_memory()
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            x, labels = task.train_batch(images, labels)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = task.loss(ddp(x), labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            seen += len(idx) * d.world
            if step == 0 and steps_per_epoch > 1:  # the first step warms up (allocation, kernel choice): not timed
                t0, seen = time.time(), 0
            bar.set_postfix(loss=f"{running:.3f}", lr=f"{max(sched.get_last_lr()):.2e}", refresh=False)
        ips = seen / (time.time() - t0)

        if d.main:
            metrics = task.evaluate(model, val_x, val_y, device)
            record = {"epoch": epoch + 1, "train_loss": round(running, 4), "images_per_s": round(ips, 1), "val": metrics}
            history.append(record)
            print(f"epoch {epoch + 1}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" ({ips:.0f} img/s)", file=sys.stderr, flush=True)
            better = best is None or (metrics["score"] > best if task.higher_is_better else metrics["score"] < best)
            if better or cfg.keep == "last":
                best = metrics["score"]
                save_checkpoint(weights_path, model, _card(task, cfg, d, history, {"val": metrics}))
            out.mkdir(parents=True, exist_ok=True)
            tmp = last.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(),
                    "epoch": epoch + 1,
                    "best": best,
                    "history": history,
                    "extra": task.extra_state(),
                    "rng": torch.get_rng_state(),
                },
                tmp,
            )
            tmp.replace(last)
        if d.world > 1:
            dist.barrier()

    in_sync = _ranks_in_sync(model) if d.world > 1 else True
    card: dict[str, Any] = {}
    if d.main:
        from dldl_core.checkpoint import load_checkpoint

        best_model, _ = load_checkpoint(weights_path, device)
        best_model = best_model.to(memory_format=torch.channels_last)
        task.calibrate(best_model, val_x, val_y, device)
        metrics = {"val": task.evaluate(best_model, val_x, val_y, device)}
        if not cfg.skip_test:
            test_x, test_y = task.load_split("test")
            metrics["test"] = task.evaluate(best_model, test_x, test_y, device)
            print("test: " + " ".join(f"{k}={v:.4f}" for k, v in metrics["test"].items()), file=sys.stderr)
        card = _card(task, cfg, d, history, metrics)
        card["training"]["ranks_in_sync"] = in_sync
        card["training"]["device"] = (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads per process)"
        )
        save_checkpoint(weights_path, best_model, card)
        print(f"wrote {weights_path} and its card", file=sys.stderr)
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return card


def _ranks_in_sync(model: nn.Module) -> bool:
    """Whether every DDP rank holds the same trained parameters (compared through a checksum).

    Batch-norm running statistics are left out: DDP copies rank 0's at each forward pass, and
    only rank 0's are saved.
    """
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    lo, hi = total.clone().reshape(1), total.clone().reshape(1)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(lo == hi)


def command(name: str, cfg: TrainConfig) -> str:
    """The command line that reproduces ``cfg``: the options that differ from their defaults."""
    default = type(cfg)()
    args = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value != getattr(default, f.name):
            flag = "--" + ("" if value is not False else "no-") + f.name.replace("_", "-")
            args.append(flag if isinstance(value, bool) else f"{flag} {value}")
    return " ".join([f"python -m train.{name}", *args])


def _card(task: Task, cfg: TrainConfig, d: _Dist, history: list, metrics: dict) -> dict[str, Any]:
    card = {"task": task.name, "model": task.model_spec(), **task.card()}
    card["training"] = {
        "command": command(task.name, cfg),
        "config": dataclasses.asdict(cfg),
        "processes": d.world,
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "history": history,
    }
    if cfg.init:  # a fine-tuned model: say what it started from, as that file may be replaced later
        from dldl_core.checkpoint import read_card

        start = read_card(cfg.init)["training"]
        card["training"]["init"] = {"weights": cfg.init, "command": start["command"], "date": start["date"]}
    card["metrics"] = metrics
    return card

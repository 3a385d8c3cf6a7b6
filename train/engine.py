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
import functools
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

from dldl_core.card import ModelCard
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
    epochs: int = opt(10, "training epochs; 0 with --init calibrates and evaluates that model as it is (a new readout, say; "
                      "an ensemble stays one)")
    batch_size: int = opt(64, "per process")
    lr: float = opt(1e-3, "peak learning rate (AdamW, linear warm-up then cosine decay)")
    weight_decay: float = opt(1e-4, "AdamW weight decay (not on biases and norms)")
    warmup_epochs: float = opt(0.5, "epochs of linear learning-rate warm-up")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "auto = cuda when present, else cpu")
    amp: bool = opt(True, "mixed precision, used on CUDA only")
    limit: int = opt(0, "train on the first N training rows only (0 = all); for smoke tests")
    backbone: str = opt("mobilenet_v2", "backbone name (dldl_core.backbones.BACKBONES); with --init the checkpoint's network is used")
    pretrained: bool = opt(True, "start from the backbone's ImageNet weights")
    init: str | None = opt(None, "start from the weights of this trained checkpoint (.safetensors of the same task), built as its card says; "
                           "several, comma-separated, are averaged weight by weight (a model soup of fine-tunes of one model)")
    ensemble: bool = opt(False, "with --epochs 0 and several --init checkpoints: keep them whole as an ensemble (their logits "
                         "averaged at every reading) instead of averaging their weights; the members may differ in backbone")
    init_member: int = opt(-1, "with one --init that is an ensemble: start from its member I (0-based) alone, as that member "
                           "was built, to fine-tune or re-read it; -1 = the whole checkpoint")
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
        if c.ensemble:
            return {"architecture": "ensemble", "heads": self.heads(), "members": [card.model for card in _init_cards(c.init)]}
        if c.init_member >= 0:
            return _init_cards(c.init)[0].model["members"][c.init_member]
        if c.init:  # the network the checkpoints are, whatever its architecture: their weights fit no other
            models = [{k: v for k, v in card.model.items() if k != "dropout"} for card in _init_cards(c.init)]
            if any(m != models[0] for m in models):
                raise ValueError("averaged --init checkpoints must be one network (backbone and heads); --ensemble keeps different ones whole")
            if models[0]["heads"] != self.heads():
                raise ValueError(f"--init's heads {models[0]['heads']} are not this run's {self.heads()}")
            first = _init_cards(c.init)[0].model
            return {**first, "dropout": c.dropout} if c.epochs and "dropout" in first else first
        return {"backbone": c.backbone, "heads": self.heads(), "dropout": c.dropout}

    def build_model(self, pretrained: bool) -> nn.Module:
        return build_model(self.model_spec(), pretrained)

    def load_split(self, split: str, limit: int = 0) -> tuple[np.ndarray, torch.Tensor]:
        """Images and labels of one split; only its first ``limit`` rows when ``limit`` > 0."""
        raise NotImplementedError

    def prepare(self, images: np.ndarray) -> None:
        """Anything measured on the training images before training that goes into the card
        (rank 0 only, once: a resumed run gets it back through ``load_extra``)."""

    def statistics(self, images: np.ndarray, labels: torch.Tensor) -> None:
        """Statistics of the training split the loss needs (class weights, say): every rank, every
        start, so each process computes the same values from the same rows."""

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
        help = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
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


@dataclass
class _Optim:
    """The optimiser, its learning-rate schedule and the AMP loss scaler, saved and resumed together."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def fit(task: Task) -> ModelCard | None:
    """Train ``task`` as its config says; returns the final model card (rank 0) or None."""
    cfg = task.config
    if cfg.epochs == 0 and (not cfg.init or cfg.resume):
        raise ValueError("--epochs 0 needs --init and no --resume: it calibrates and evaluates a trained model without training it")
    if cfg.ensemble and (cfg.epochs or len(_init_paths(cfg.init)) < 2):
        raise ValueError("--ensemble needs --epochs 0 and two or more --init checkpoints: it combines trained models, it does not train")
    if cfg.init_member >= 0 and (cfg.ensemble or len(_init_paths(cfg.init)) != 1
                                 or cfg.init_member >= len(_init_cards(cfg.init)[0].model.get("members", []))):
        raise ValueError(f"--init-member {cfg.init_member} takes one --init that is an ensemble of more than {cfg.init_member} members")
    d, device = _setup(cfg)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed + d.rank)  # DDP copies rank 0's initial weights; augmentation differs per rank
    np.random.seed(cfg.seed + d.rank)

    last = out / "last.pt"
    state = torch.load(last, map_location="cpu", weights_only=True) if cfg.resume and last.is_file() else None
    if cfg.resume and state is None and d.main:
        print(f"no {last} to resume from; starting afresh", file=sys.stderr)

    # The model first: a missing ImageNet weights package is reported before minutes of data loading.
    # Channels-last is about twice as fast on CPU (oneDNN) and what tensor cores want on GPU.
    model = _initial_model(task, fresh=state is None).to(device, memory_format=torch.channels_last)
    train_x, train_y = task.load_split("train", cfg.limit)
    val_x, val_y = task.load_split("val", cfg.val_limit)
    task.statistics(train_x, train_y)
    if state is None and d.main:
        task.prepare(train_x)
    elif state is not None:
        task.load_extra(state.get("extra", {}))
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[d.local_rank] if device.type == "cuda" else None) if d.world > 1 else model

    steps_per_epoch = len(train_x) // (cfg.batch_size * d.world)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_x)} training rows are fewer than one global batch of {cfg.batch_size * d.world}")
    optim = None if cfg.epochs == 0 else _optimizer(model, cfg, steps_per_epoch, device)  # nothing is trained
    start_epoch, best, history = 0, None, []
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state)
        start_epoch, best, history = state["epoch"], state["best"], list(state["history"])
        if "rng" in state:  # augmentation continues as the uninterrupted run's would
            torch.set_rng_state(state["rng"])
        if d.main:
            print(f"resumed from {last} after epoch {start_epoch}", file=sys.stderr)

    weights_path = out / f"{task.name}.safetensors"
    if cfg.epochs == 0 and d.main:  # the --init model as it is, calibrated and evaluated with this config's readout
        save_checkpoint(weights_path, model, _card(task, cfg, d, history, {}))
    for epoch in range(start_epoch, cfg.epochs):
        running, ips = _train_epoch(task, model, ddp, optim, (train_x, train_y), steps_per_epoch, epoch, d, device)
        if d.main:
            metrics = task.evaluate(model, val_x, val_y, device)
            history.append({"epoch": epoch + 1, "train_loss": round(running, 4), "images_per_s": round(ips, 1), "val": metrics})
            print(f"epoch {epoch + 1}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()) + f" ({ips:.0f} img/s)", file=sys.stderr, flush=True)
            better = best is None or (metrics["score"] > best if task.higher_is_better else metrics["score"] < best)
            if better or cfg.keep == "last":
                best = metrics["score"]
                save_checkpoint(weights_path, model, _card(task, cfg, d, history, {"val": metrics}))
            _save_state(last, model, optim, task, {"epoch": epoch + 1, "best": best, "history": history})
        if d.world > 1:
            dist.barrier()

    in_sync = _ranks_in_sync(model) if d.world > 1 else True
    card = _finish(task, weights_path, (val_x, val_y), history, d, device, in_sync) if d.main else None
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return card


def _initial_model(task: Task, fresh: bool) -> nn.Module:
    """The network to train: from ImageNet, or from ``cfg.init`` (a trained checkpoint). A resumed
    run (``fresh`` False) gets its weights from ``last.pt`` afterwards."""
    cfg = task.config
    model = task.build_model(pretrained=cfg.pretrained and fresh and not cfg.init)
    if cfg.init and fresh:
        from dldl_core.checkpoint import load_checkpoint

        if cfg.ensemble:  # the members whole, as trained (build_model checked that they have the task's heads)
            for member, path in zip(model.members, _init_paths(cfg.init)):
                member.load_state_dict(load_checkpoint(path)[0].state_dict())
            return model
        if cfg.init_member >= 0:
            model.load_state_dict(load_checkpoint(cfg.init)[0].members[cfg.init_member].state_dict())
            return model
        states = [load_checkpoint(path)[0].state_dict() for path in _init_paths(cfg.init)]
        # batch-norm counters (integers) are taken from the first
        model.load_state_dict({k: sum(s[k] for s in states) / len(states) if v.is_floating_point() else v for k, v in states[0].items()})
    return model


def _init_paths(init: str | None) -> list[str]:
    """``--init``'s checkpoints (comma-separated)."""
    return [p.strip() for p in (init or "").split(",") if p.strip()]


@functools.cache
def _init_cards(init: str) -> tuple[ModelCard, ...]:
    """``--init``'s model cards, read once per run (every saved card names them; an ensemble's
    model section is built from them)."""
    from dldl_core.checkpoint import read_card

    return tuple(read_card(path) for path in _init_paths(init))


def _init_provenance(init: str, ensemble: bool, member: int) -> dict[str, Any]:
    """What ``--init`` started from, as its cards say (every saved card repeats it, as that file may be replaced later)."""
    starts = [{"weights": path, "command": card.training["command"], "date": card.training["date"],
               **{k: card.training[k] for k in ("init", "source") if k in card.training}}
              for path, card in zip(_init_paths(init), _init_cards(init))]
    if member >= 0:  # --init-member takes one --init
        starts[0]["member"] = member
    return starts[0] if len(starts) == 1 else {"weights": init, "ensemble" if ensemble else "averaged": starts}


def _optimizer(model: nn.Module, cfg: TrainConfig, steps_per_epoch: int, device: torch.device) -> _Optim:
    """AdamW with no weight decay on biases and norms, the backbone at ``backbone_lr_scale`` of the
    heads' rate, a linear warm-up then cosine decay, and a loss scaler for AMP on CUDA."""
    if cfg.backbone_lr_scale == 0:  # a linear probe: no gradient through the backbone at all
        model.backbone.requires_grad_(False)
    groups = []
    for part, scale in ((model.backbone, cfg.backbone_lr_scale), (model.heads, 1.0)):
        params = [p for p in part.parameters() if p.requires_grad]
        groups.append({"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay, "lr": cfg.lr * scale})
        groups.append({"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": cfg.lr * scale})
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, steps_per_epoch * cfg.epochs))
    return _Optim(opt, sched, torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda"))


def _train_epoch(
    task: Task, model: nn.Module, ddp: nn.Module, optim: _Optim, train: tuple[np.ndarray, torch.Tensor], steps: int, epoch: int, d: _Dist,
    device: torch.device,
) -> tuple[float, float]:
    """One pass over a fresh shuffle of the training rows; returns the running loss and images/s."""
    cfg = task.config
    train_x, train_y = train
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    use_amp = optim.scaler.is_enabled()  # AMP on CUDA only, as the optimiser's scaler was built
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # same order on every rank
    perm = torch.randperm(len(train_x), generator=g)
    glob = cfg.batch_size * d.world
    t0, seen, running = time.time(), 0, 0.0
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not d.main, mininterval=10, file=sys.stderr)
    for step in bar:
        # Each step's global batch is the same as a single process with the global batch size
        # would take; every rank gets its share of it (rows sorted: the cache is read in order).
        idx = np.sort(perm[step * glob : (step + 1) * glob][d.rank :: d.world].numpy())
        images, labels = torch.from_numpy(np.ascontiguousarray(train_x[idx])), train_y[idx]
        if device.type == "cuda":  # page-locked, so the copies below run asynchronously
            images, labels = images.pin_memory(), labels.pin_memory()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x, labels = task.train_batch(images, labels)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss = task.loss(ddp(x), labels)
        optim.opt.zero_grad(set_to_none=True)
        optim.scaler.scale(loss).backward()
        optim.scaler.step(optim.opt)
        optim.scaler.update()
        optim.sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        seen += len(idx) * d.world
        if step == 0 and steps > 1:  # the first step warms up (allocation, kernel choice): not timed
            t0, seen = time.time(), 0
        bar.set_postfix(loss=f"{running:.3f}", lr=f"{max(optim.sched.get_last_lr()):.2e}", refresh=False)
    return running, seen / (time.time() - t0)


def _save_state(last: Path, model: nn.Module, optim: _Optim, task: Task, progress: dict[str, Any]) -> None:
    """``last.pt``: everything a resumed run needs, written under a temporary name and renamed."""
    last.parent.mkdir(parents=True, exist_ok=True)
    tmp = last.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), **optim.state_dict(), **progress, "extra": task.extra_state(), "rng": torch.get_rng_state()}, tmp)
    tmp.replace(last)


def _finish(
    task: Task, weights_path: Path, val: tuple[np.ndarray, torch.Tensor], history: list, d: _Dist, device: torch.device, in_sync: bool
) -> ModelCard:
    """Reload the kept epoch, calibrate it on val, test it once (unless ``skip_test``), write its card."""
    from dldl_core.checkpoint import load_checkpoint

    cfg = task.config
    best_model, _ = load_checkpoint(weights_path, device)
    best_model = best_model.to(memory_format=torch.channels_last)
    task.calibrate(best_model, *val, device)
    metrics = {"val": task.evaluate(best_model, *val, device)}
    if not cfg.skip_test:
        test_x, test_y = task.load_split("test")
        metrics["test"] = task.evaluate(best_model, test_x, test_y, device)
        print("test: " + " ".join(f"{k}={v:.4f}" for k, v in metrics["test"].items()), file=sys.stderr)
    card = _card(task, cfg, d, history, metrics)
    card.training["ranks_in_sync"] = in_sync
    card.training["device"] = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads per process)"
    )
    save_checkpoint(weights_path, best_model, card)
    print(f"wrote {weights_path} and its card", file=sys.stderr)
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


def _card(task: Task, cfg: TrainConfig, d: _Dist, history: list, metrics: dict) -> ModelCard:
    """The one place a card is written: the task's sections plus how and on what it was trained."""
    training = {
        "command": command(task.name, cfg),
        "config": dataclasses.asdict(cfg),
        "processes": d.world,
        "torch": torch.__version__,
        "date": dt.date.today().isoformat(),
        "history": history,
    }
    if cfg.init:  # a fine-tuned model: say what it started from, as that file may be replaced later
        training["init"] = _init_provenance(cfg.init, cfg.ensemble, cfg.init_member)
    return ModelCard.from_json({"task": task.name, "model": task.model_spec(), **task.card(), "training": training, "metrics": metrics})

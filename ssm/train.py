"""Training for chapter 8: tasks, presets, a plain PyTorch loop and the CLI.

Run ``python -m ssm.train --help``. The loop is AdamW :cite:p:`loshchilov2019adamw` with a linear
warm-up and a cosine schedule :cite:p:`loshchilov2017sgdr`; the SSM parameters (those a layer marks
with ``_ssm_param = True``: Delta, A, B) get a lower learning rate and no weight decay, as in
S4 :cite:p:`gu2022s4`. Gradients are clipped. Metrics go to ``metrics.jsonl``; checkpoints are
written atomically and ``--resume`` continues bit-identically on CPU, because every batch is a
function of ``(seed, step)`` and the checkpoint carries the PyTorch random state.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ssm import data
from ssm.models import BACKBONES, SequenceModel, count_parameters, width_for_budget

__all__ = [
    "TASKS",
    "PRESETS",
    "Task",
    "available_models",
    "make_task",
    "make_model",
    "build",
    "param_groups",
    "evaluate",
    "train",
    "run",
    "main",
]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Task:
    """A task: how to draw training batches, the test sets, and how to score a model.

    ``kind`` is ``"tokens"`` (cross-entropy on positions whose target is not
    :data:`ssm.data.IGNORE`, token accuracy), ``"classify"`` (one label per sequence) or
    ``"regress"`` (mean squared error on standardised values; MAE reported in the data's unit,
    ``scale`` times the standardised MAE). ``batch(step, size)`` returns the training batch of a
    step; ``tests`` maps names to ``(x, y)``; ``reference`` holds baseline metrics.
    """

    name: str
    kind: str
    d_input: int
    d_output: int
    readout: str
    batch: Callable[[int, int], Batch]
    tests: dict[str, Batch]
    scale: float = 1.0
    reference: dict[str, float] = field(default_factory=dict)


def _seed_for(seed: int, step: int) -> int:
    return seed * 1_000_003 + step


def _sampler(x: torch.Tensor, y: torch.Tensor, seed: int) -> Callable[[int, int], Batch]:
    """Batches of a fixed training set, reshuffled each epoch with a seed of ``(seed, epoch)``."""

    def batch(step: int, size: int) -> Batch:
        n = x.shape[0]
        first = step * size
        idx = []
        while len(idx) < size:
            epoch, offset = divmod(first + len(idx), n)
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(_seed_for(seed, epoch))
            )
            idx.extend(perm[offset : offset + size - len(idx)].tolist())
        return x[idx], y[idx]

    return batch


TEST_SEED = 987_654_321  # test sets use seeds no training batch uses (training seeds are small)


def _selective_copying(cfg: dict, seed: int) -> Task:
    kw = {k: cfg[k] for k in ("n_tokens", "n_memory", "vocab")}
    return Task(
        "selective_copying",
        "tokens",
        cfg["vocab"] + 2,
        cfg["vocab"] + 2,
        "all",
        lambda step, size: data.selective_copying(size, **kw, seed=_seed_for(seed, step)),
        {"test": data.selective_copying(cfg["n_test"], **kw, seed=TEST_SEED + seed)},
    )


def _induction_heads(cfg: dict, seed: int) -> Task:
    L, V = cfg["length"], cfg["vocab"]
    tests = {
        f"test_x{m}": data.induction_heads(cfg["n_test"], m * L, V, seed=TEST_SEED + m + seed)
        for m in (1, 2, 4, 8)
    }
    return Task(
        "induction_heads",
        "tokens",
        V + 1,
        V + 1,
        "last",
        lambda step, size: data.induction_heads(size, L, V, seed=_seed_for(seed, step)),
        {"test": tests["test_x1"], **tests},
    )


def _mnist1d(cfg: dict, seed: int) -> Task:
    d = data.mnist1d()
    return Task(
        "mnist1d",
        "classify",
        1,
        10,
        cfg["readout"],
        _sampler(d["x"], d["y"], seed),
        {"test": (d["x_test"], d["y_test"])},
        reference={
            "logistic_regression": 0.32,
            "mlp": 0.68,
            "cnn": 0.94,
            "gru": 0.91,
            "human": 0.96,
        },
    )


def _co2(cfg: dict, seed: int) -> Task:
    """Monthly CO2: the last ``test_fraction`` of the months are the test period. Each window
    is shifted by the mean of its context and divided by the training series' std."""
    series = data.co2_monthly()
    context, horizon, period = cfg["context"], cfg["horizon"], 12
    n_train = int(len(series) * (1 - cfg["test_fraction"]))
    scale = float(series[:n_train].std())
    splits = {"train": series[:n_train], "test": series[n_train - context :]}
    windows = {k: data.forecast_windows(s, context, horizon) for k, s in splits.items()}
    naive = data.seasonal_naive(windows["test"][0], horizon, period)
    naive_mae = float((naive - windows["test"][1]).abs().mean())

    def standardise(x: torch.Tensor, y: torch.Tensor) -> Batch:
        m = x.mean(dim=1, keepdim=True)
        return ((x - m) / scale).float(), ((y - m) / scale).float().squeeze(-1)

    train_x, train_y = standardise(*windows["train"])
    return Task(
        "co2",
        "regress",
        1,
        horizon,
        "last",
        _sampler(train_x, train_y, seed),
        {"test": standardise(*windows["test"])},
        scale=scale,
        reference={"seasonal_naive_mae": naive_mae},
    )


TASKS: dict[str, Callable[[dict, int], Task]] = {
    "selective_copying": _selective_copying,
    "induction_heads": _induction_heads,
    "mnist1d": _mnist1d,
    "co2": _co2,
}
"""Task builders by name; ``TASKS[name](config, seed)`` returns a :class:`Task`."""

_COMMON = {
    "lr": 3e-3,
    "lr_ssm": 1e-3,
    "lr_ssm_s6": 3e-3,
    "weight_decay": 0.05,
    "warmup": 0.05,
    "clip": 1.0,
    "n_layers": 2,
    "d_state": 16,
    "dropout": 0.0,
    "eval_every": 0,
    "ckpt_every": 0,
}

_FAST = {"lr": 6e-3, "lr_ssm_s6": 6e-3}  # the token tasks: S6 learned them faster at 6e-3

PRESETS: dict[str, dict[str, dict]] = {
    "selective_copying": {
        "quick": {
            **_COMMON,
            **_FAST,
            "n_tokens": 4,
            "n_memory": 16,
            "vocab": 4,
            "n_test": 512,
            "params": 12_000,
            "steps": 500,
            "batch": 32,
        },
        "full": {
            **_COMMON,
            **_FAST,
            "n_tokens": 8,
            "n_memory": 48,
            "vocab": 8,
            "n_test": 1024,
            "params": 30_000,
            "steps": 3000,
            "batch": 32,
        },
    },
    "induction_heads": {
        "quick": {
            **_COMMON,
            **_FAST,
            "length": 32,
            "vocab": 8,
            "n_test": 256,
            "params": 12_000,
            "steps": 400,
            "batch": 32,
        },
        "full": {
            **_COMMON,
            **_FAST,
            "length": 64,
            "vocab": 16,
            "n_test": 512,
            "params": 30_000,
            "steps": 2000,
            "batch": 32,
        },
    },
    "mnist1d": {
        "quick": {**_COMMON, "readout": "mean", "params": 12_000, "steps": 400, "batch": 64},
        "full": {
            **_COMMON,
            "readout": "mean",
            "params": 40_000,
            "steps": 1500,
            "batch": 64,
            "dropout": 0.1,
        },
    },
    "co2": {
        "quick": {
            **_COMMON,
            "context": 48,
            "horizon": 12,
            "test_fraction": 0.2,
            "params": 8_000,
            "steps": 300,
            "batch": 32,
        },
        "full": {
            **_COMMON,
            "context": 48,
            "horizon": 12,
            "test_fraction": 0.2,
            "params": 20_000,
            "steps": 1000,
            "batch": 32,
        },
    },
}
"""Configurations by task and preset. ``params`` is the parameter budget: every model's width is
chosen so that its size is the closest to it (:func:`ssm.models.width_for_budget`). ``lr_ssm``
is the learning rate of the S4, S4D and DSS parameters Delta, A, B; ``lr_ssm_s6`` that of S6's
(Mamba trains them at the main rate: with ``1e-3`` S6 learned selective copying more slowly)."""


def available_models() -> tuple[str, ...]:
    """The backbones whose modules exist in this checkout (the SSM layers live in ``ssm.layers``
    and ``ssm.mamba``)."""
    present = {
        "ssm.layers": importlib.util.find_spec("ssm.layers") is not None,
        "ssm.mamba": importlib.util.find_spec("ssm.mamba") is not None,
    }
    need = {"s4": "ssm.layers", "s4d": "ssm.layers", "dss": "ssm.layers", "s6": "ssm.mamba"}
    return tuple(b for b in BACKBONES if b not in need or present[need[b]])


def _check_choice(name: str, value: str, valid: tuple[str, ...] | list[str]) -> None:
    if value not in valid:
        raise ValueError(f"{name}: expected one of {', '.join(valid)}, got {value!r}")


def make_task(name: str, preset: str = "quick", seed: int = 0) -> tuple[Task, dict]:
    """The task ``name`` with its ``preset`` configuration: ``(task, config)``."""
    _check_choice("task", name, list(TASKS))
    _check_choice("preset", preset, list(PRESETS[name]))
    cfg = dict(PRESETS[name][preset])
    return TASKS[name](cfg, seed), cfg


def make_model(model: str, task: Task, cfg: dict) -> SequenceModel:
    """A :class:`~ssm.models.SequenceModel` for ``task`` whose size is closest to
    ``cfg["params"]``."""
    _check_choice("model", model, available_models())
    kw = {
        "d_input": task.d_input,
        "d_output": task.d_output,
        "n_layers": cfg["n_layers"],
        "d_state": cfg["d_state"],
        "readout": task.readout,
        "tokens": task.kind == "tokens",
        "dropout": cfg["dropout"],
    }
    return SequenceModel(model, d_model=width_for_budget(model, cfg["params"], **kw), **kw)


def param_groups(
    model: torch.nn.Module, lr: float, lr_ssm: float, weight_decay: float
) -> list[dict]:
    """AdamW groups: SSM parameters (``_ssm_param``) at ``lr_ssm`` without weight decay; other
    matrices with weight decay; biases, norms, other vectors and parameters marked
    ``_no_weight_decay`` without."""
    groups = {"ssm": [], "decay": [], "no_decay": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if getattr(p, "_ssm_param", False):
            key = "ssm"
        elif p.dim() >= 2 and not getattr(p, "_no_weight_decay", False):
            key = "decay"
        else:
            key = "no_decay"
        groups[key].append(p)
    spec = {"ssm": (lr_ssm, 0.0), "decay": (lr, weight_decay), "no_decay": (lr, 0.0)}
    return [
        {"params": ps, "lr": spec[k][0], "weight_decay": spec[k][1], "name": k}
        for k, ps in groups.items()
        if ps
    ]


def cosine_with_warmup(total: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor: linear from 0 to 1 over ``warmup`` steps, then a cosine to 0."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def loss_fn(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (tokens, classify) or mean squared error (regress)."""
    if task.kind == "regress":
        return nn.functional.mse_loss(out, y)
    if task.kind == "tokens" and out.dim() == 3:
        return nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=data.IGNORE)
    if task.kind == "tokens":
        y = y[:, -1]
    return nn.functional.cross_entropy(out, y)


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: Task, batch_size: int = 256) -> dict[str, float]:
    """Test metrics: ``{name}_acc`` (token or sequence accuracy) or ``{name}_mae`` and
    ``{name}_mse`` in the data's unit, for every test set of ``task``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    metrics = {}
    for name, (x, y) in task.tests.items():
        num, err, sq = 0.0, 0.0, 0.0
        for i in range(0, x.shape[0], batch_size):
            xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
            out = model(xb)
            if task.kind == "regress":
                err += float((out - yb).abs().sum()) * task.scale
                sq += float(((out - yb) ** 2).sum()) * task.scale**2
                num += yb.numel()
                continue
            if task.kind == "tokens" and out.dim() == 2:
                yb = yb[:, -1]
            scored = yb != data.IGNORE
            err += float((out.argmax(-1) == yb)[scored].sum())
            num += float(scored.sum())
        if task.kind == "regress":
            metrics[f"{name}_mae"], metrics[f"{name}_mse"] = err / num, sq / num
        else:
            metrics[f"{name}_acc"] = err / num
    model.train(was_training)
    return metrics


def _atomic_save(obj: dict, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _read_log(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= up_to_step]


def train(
    model: torch.nn.Module,
    task: Task,
    cfg: dict,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> list[dict]:
    """Train ``model`` on ``task`` for ``cfg["steps"]`` steps, writing to the folder ``out``.

    Writes ``metrics.jsonl`` (a record every ``cfg["log_every"]`` steps and at every evaluation)
    and ``checkpoint.pt`` (every ``cfg["ckpt_every"]`` steps and at the end). With ``resume``,
    training continues from ``checkpoint.pt`` if it exists. ``stop_at`` ends the run early after
    that many steps (the schedule still spans ``cfg["steps"]``). Returns the metric records.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.pt", out / "metrics.jsonl"
    steps = cfg["steps"]
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg["lr"], cfg["lr_ssm"], cfg["weight_decay"])
    )
    warmup = max(1, int(cfg["warmup"] * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(steps, warmup))
    start = 0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = int(state["step"])
    elif log_path.exists():
        log_path.unlink()
    records = _read_log(log_path, start)
    log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    device = next(model.parameters()).device
    end = steps if stop_at is None else min(steps, stop_at)
    log_every, eval_every = cfg.get("log_every", 10), cfg["eval_every"]
    ckpt_every = cfg["ckpt_every"]

    def save(step: int) -> None:
        _atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
            },
            ckpt_path,
        )

    model.train()
    bar = tqdm(
        range(start, end),
        initial=start,
        total=end,
        disable=not progress,
        desc=f"{task.name}",
        mininterval=2.0,
    )
    for step in bar:
        x, y = task.batch(step, cfg["batch"])
        loss = loss_fn(task, model(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg["clip"])
        optimizer.step()
        scheduler.step()
        done = step + 1
        if done % log_every == 0 or done == end:
            record = {"step": done, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}
            if (eval_every and done % eval_every == 0) or done == steps:
                record.update(evaluate(model, task))
            records.append(record)
            _log(log_path, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if ckpt_every and done % ckpt_every == 0 and done != end:
            save(done)
    save(end)
    return records


def build(
    task_name: str, model_name: str, preset: str = "quick", seed: int = 0
) -> tuple[Task, dict, SequenceModel]:
    """Seed everything, then make the task, its configuration and the model: what :func:`run`
    trains. For ``s6`` the configuration's ``lr_ssm`` becomes ``lr_ssm_s6``."""
    _check_choice("task", task_name, list(TASKS))
    _check_choice("model", model_name, available_models())
    from ssm.utils import seed_everything

    seed_everything(seed)
    task, cfg = make_task(task_name, preset, seed)
    if model_name == "s6":
        cfg["lr_ssm"] = cfg["lr_ssm_s6"]
    return task, cfg, make_model(model_name, task, cfg)


def run(
    task_name: str,
    model_name: str,
    preset: str = "quick",
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> dict:
    """Build the task and model, train, evaluate, and write ``result.json`` to ``out``.

    Returns the result: task, model, preset, seed, parameter count, wall time (s), test metrics,
    reference metrics, the configuration, the command and the metric history.
    """
    task, cfg, model = build(task_name, model_name, preset, seed)
    out = Path(out) if out is not None else Path("runs") / f"{task_name}_{model_name}_{preset}"
    t0 = time.perf_counter()
    history = train(model, task, cfg, out, resume=resume, progress=progress)
    wall = time.perf_counter() - t0
    result = {
        "task": task_name,
        "model": model_name,
        "preset": preset,
        "seed": seed,
        "params": count_parameters(model),
        "d_model": model.d_model,
        "wall_time_s": round(wall, 1),
        "test": evaluate(model, task),
        "reference": task.reference,
        "config": cfg,
        "command": command
        or f"python -m ssm.train {task_name} {model_name} --preset {preset} --seed {seed}",
        "history": history,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m ssm.train",
        description="Train one model on one task of chapter 8 and print a JSON summary as the "
        "last line of output (task, model, parameter count, wall time, test metrics). "
        "Writes metrics.jsonl, checkpoint.pt and result.json to --out.",
    )
    parser.add_argument("task", help=f"task: one of {', '.join(TASKS)}")
    parser.add_argument("model", help=f"model: one of {', '.join(available_models())}")
    parser.add_argument(
        "--preset",
        default="quick",
        help="quick (minutes on a laptop CPU) or full (the chapter's tables); default quick",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out", default=None, help="output folder (default runs/TASK_MODEL_PRESET)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT/checkpoint.pt if it exists"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for PyTorch (default 1: fastest for these small "
        "models, and fair when several runs share a machine)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    """CLI entry point; returns the result after printing its summary."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _check_choice("task", args.task, list(TASKS))
        _check_choice("model", args.model, available_models())
        _check_choice("preset", args.preset, list(PRESETS[args.task]))
    except ValueError as err:
        parser.error(str(err))
    if args.threads < 1:
        parser.error(f"--threads: expected a positive int, got {args.threads}")
    torch.set_num_threads(args.threads)
    command = "python -m ssm.train " + " ".join(shlex.quote(a) for a in argv)
    result = run(
        args.task,
        args.model,
        args.preset,
        args.seed,
        args.out,
        args.resume,
        not args.no_progress,
        command,
    )
    summary = {
        k: result[k]
        for k in ("task", "model", "preset", "seed", "params", "wall_time_s", "test", "reference")
    }
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()

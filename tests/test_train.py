"""Tests for ssm.train: the loop learns, resume is bit-identical, checkpoints round-trip,
the optimiser groups and schedule follow their definitions, and the CLI reports errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ssm import train
from ssm.data import IGNORE
from ssm.models import SequenceModel

TINY = {
    **train._COMMON,
    "n_tokens": 2,
    "n_memory": 6,
    "vocab": 3,
    "n_test": 64,
    "params": 2000,
    "steps": 40,
    "batch": 16,
    "log_every": 1,
    "dropout": 0.1,
}


def tiny(backbone: str = "gru", steps: int = 40) -> tuple[SequenceModel, train.Task, dict]:
    cfg = {**TINY, "steps": steps}
    torch.manual_seed(0)
    task = train.TASKS["selective_copying"](cfg, seed=0)
    return train.make_model(backbone, task, cfg), task, cfg


def test_loss_decreases_on_a_tiny_task(tmp_path):
    model, task, cfg = tiny(steps=150)
    before = train.evaluate(model, task)["test_acc"]
    records = train.train(model, task, cfg, tmp_path, progress=False)
    losses = [r["loss"] for r in records]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.7 * first, (first, last)
    assert train.evaluate(model, task)["test_acc"] > before + 0.2
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 151))


@pytest.mark.parametrize(
    "backbone", [m for m in ("gru", "s4d", "s6") if m in train.available_models()]
)
def test_resume_is_bit_identical(tmp_path, backbone):
    model_a, task, cfg = tiny(backbone, steps=12)
    train.train(model_a, task, cfg, tmp_path / "a", progress=False)
    model_b, _, _ = tiny(backbone, steps=12)
    train.train(model_b, task, cfg, tmp_path / "b", progress=False, stop_at=5)
    torch.manual_seed(123)  # the checkpoint, not the current state, must drive the rest
    model_c, _, _ = tiny(backbone, steps=12)
    train.train(model_c, task, cfg, tmp_path / "b", resume=True, progress=False)
    for (name, p), q in zip(
        model_a.state_dict().items(), model_c.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    log_a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert log_a == (tmp_path / "b" / "metrics.jsonl").read_text()


def test_checkpoint_round_trips_and_is_written_atomically(tmp_path):
    model, task, cfg = tiny(steps=6)
    train.train(model, task, {**cfg, "ckpt_every": 2}, tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "metrics.jsonl"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 6
    fresh, _, _ = tiny()
    fresh.load_state_dict(state["model"])
    x = task.tests["test"][0][:8]
    model.eval(), fresh.eval()
    assert torch.equal(model(x), fresh(x))


def test_param_groups_split_ssm_parameters():
    model = nn.Module()
    model.lin = nn.Linear(3, 4)
    model.A = nn.Parameter(torch.zeros(4, 2))
    model.A._ssm_param = True
    model.D = nn.Parameter(torch.zeros(2, 2))
    model.D._no_weight_decay = True
    groups = {
        g["name"]: g for g in train.param_groups(model, lr=1e-2, lr_ssm=1e-3, weight_decay=0.1)
    }
    assert [p is model.A for p in groups["ssm"]["params"]] == [True]
    assert groups["ssm"]["lr"] == 1e-3 and groups["ssm"]["weight_decay"] == 0.0
    assert (
        groups["decay"]["params"] == [model.lin.weight] and groups["decay"]["weight_decay"] == 0.1
    )
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(model.lin.bias), id(model.D)}


def test_ssm_layers_put_their_parameters_in_the_slow_group():
    for backbone in set(train.available_models()) & {"s4", "s4d", "dss", "s6"}:
        model = SequenceModel(backbone, 3, 2, d_model=8, d_state=4)
        groups = {g["name"]: g for g in train.param_groups(model, 1e-2, 1e-3, 0.1)}
        assert len(groups["ssm"]["params"]) > 0, backbone


def test_cosine_with_warmup_closed_form():
    f = train.cosine_with_warmup(total=110, warmup=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.0, abs=1e-12)


class Oracle(nn.Module):
    """Answers with the correct token on a fixed set of rows, token 0 elsewhere."""

    def __init__(self, y: torch.Tensor, correct_rows: int, V: int):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        target = y.clamp_min(0)
        target[correct_rows:] = 0
        self.logits = nn.functional.one_hot(target, V).float()

    def forward(self, x):
        return self.logits[: x.shape[0]] if x.shape[0] == self.logits.shape[0] else self.logits


def test_evaluate_token_accuracy_by_hand():
    x = torch.zeros(4, 3, dtype=torch.long)
    y = torch.tensor([[IGNORE, 2, 1], [IGNORE, 1, 1], [IGNORE, 2, 2], [IGNORE, 1, 2]])
    task = train.Task("t", "tokens", 3, 3, "all", lambda s, b: (x, y), {"test": (x, y)})
    # rows 0-1 right (4 scored tokens); rows 2-3 answer 0, never a target: 4 of 8 correct
    assert train.evaluate(Oracle(y, 2, 3), task, batch_size=4) == {"test_acc": 0.5}


def test_evaluate_regression_in_data_units():
    x, y = torch.zeros(2, 5, 1), torch.tensor([[1.0, -1.0], [3.0, 0.0]])

    class Zero(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.zeros(x.shape[0], 2)

    task = train.Task("t", "regress", 1, 2, "last", lambda s, b: (x, y), {"test": (x, y)}, scale=2)
    metrics = train.evaluate(Zero(), task)
    assert metrics["test_mae"] == pytest.approx(2 * (1 + 1 + 3 + 0) / 4)
    assert metrics["test_mse"] == pytest.approx(4 * (1 + 1 + 9 + 0) / 4)


def test_sampler_visits_every_example_once_per_epoch():
    x, y = torch.arange(10).reshape(10, 1), torch.arange(10)
    batch = train._sampler(x, y, seed=3)
    seen = torch.cat([batch(step, 4)[1] for step in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch(2, 4)[1], batch(2, 4)[1])


def test_co2_task_baseline_is_the_seasonal_naive_mae():
    task, cfg = train.make_task("co2", "quick")
    x, y = task.tests["test"]
    assert x.shape[1:] == (cfg["context"], 1) and y.shape[1:] == (cfg["horizon"],)
    # the seasonal naive forecast on standardised windows, rescaled, gives the stored MAE
    naive = x[:, -12:, 0]
    mae = float((naive - y).abs().mean()) * task.scale
    assert mae == pytest.approx(task.reference["seasonal_naive_mae"], rel=1e-5)


def test_make_task_and_model_errors():
    with pytest.raises(
        ValueError, match="task: expected one of selective_copying, induction_heads"
    ):
        train.make_task("copying")
    with pytest.raises(ValueError, match="preset: expected one of quick, full, got 'huge'"):
        train.make_task("co2", "huge")
    task, cfg = train.make_task("co2")
    with pytest.raises(ValueError, match="model: expected one of .*gru.*, got 'lstm'"):
        train.make_model("lstm", task, cfg)


def test_cli_prints_json_summary_last(tmp_path, capsys):
    train.main(["co2", "conv", "--out", str(tmp_path), "--no-progress"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["task"] == "co2" and summary["model"] == "conv"
    assert summary["params"] > 0 and summary["wall_time_s"] > 0
    assert set(summary["test"]) == {"test_mae", "test_mse"}
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["command"].startswith("python -m ssm.train co2 conv")
    assert result["history"][-1]["step"] == result["config"]["steps"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["copy", "gru"], "task: expected one of selective_copying, induction_heads, mnist1d, co2"),
        (["co2", "lstm"], "model: expected one of .*conv, gru, transformer, got 'lstm'"),
        (["co2", "gru", "--preset", "huge"], "preset: expected one of quick, full"),
        (["co2", "gru", "--threads", "0"], "--threads: expected a positive int, got 0"),
    ],
)
def test_cli_errors_list_valid_choices(argv, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    assert exit_info.value.code == 2
    assert re.search(match, capsys.readouterr().err)


def test_module_entry_point_help():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "ssm.train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
    ).stdout
    for word in ("selective_copying", "mnist1d", "--preset", "--resume", "--seed", "--out", "gru"):
        assert word in out

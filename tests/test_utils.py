"""ssm.utils: seeding reproduces draws, bad seeds are refused, the device is valid."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import ssm


def draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.randn(3)


def test_seed_everything_reproduces_python_numpy_and_torch_draws() -> None:
    ssm.seed_everything(123)
    first = draws()
    ssm.seed_everything(123)
    second = draws()
    assert first[:2] == second[:2]
    assert torch.equal(first[2], second[2])
    ssm.seed_everything(124)
    assert not torch.equal(draws()[2], second[2])


@pytest.mark.parametrize(
    ("seed", "error", "match"),
    [(-1, ValueError, "non-negative"), (1.5, TypeError, "float"), (True, TypeError, "bool")],
)
def test_seed_everything_rejects_bad_seeds(seed, error, match) -> None:
    with pytest.raises(error, match=match):
        ssm.seed_everything(seed)


def test_default_device_honours_the_override(monkeypatch) -> None:
    monkeypatch.setenv("SSM_DEVICE", "cpu")
    assert ssm.default_device() == torch.device("cpu")
    monkeypatch.delenv("SSM_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert ssm.default_device().type == expected

"""Tests for ssm.models: shapes, causality (checked by perturbing the future), parameter
counting against hand counts, and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssm.models import (
    BACKBONES,
    SequenceModel,
    count_parameters,
    sinusoidal_positions,
    width_for_budget,
)
from ssm.train import available_models

MODELS = available_models()


@pytest.mark.parametrize("backbone", MODELS)
def test_shapes_for_every_readout(backbone):
    torch.manual_seed(0)
    tok = SequenceModel(backbone, d_input=7, d_output=5, d_model=16, d_state=4, tokens=True)
    assert tok(torch.randint(0, 7, (3, 11))).shape == (3, 11, 5)
    for readout in ("last", "mean"):
        m = SequenceModel(backbone, d_input=2, d_output=4, d_model=16, d_state=4, readout=readout)
        assert m(torch.randn(3, 9, 2)).shape == (3, 4)
    # L = 1 works too
    assert tok(torch.randint(0, 7, (2, 1))).shape == (2, 1, 5)


@pytest.mark.parametrize("backbone", MODELS)
def test_every_backbone_is_causal(backbone):
    """Changing the input at step t must leave the outputs before t unchanged."""
    torch.manual_seed(0)
    m = SequenceModel(backbone, d_input=3, d_output=2, d_model=16, d_state=4).double().eval()
    x = torch.randn(2, 13, 3, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 7:] += torch.randn(2, 6, 3, dtype=torch.float64)
    y, y2 = m(x), m(x2)
    # float64: the outputs before t agree to rounding error (FFT convolutions leak ~1e-15)
    torch.testing.assert_close(y[:, :7], y2[:, :7], rtol=0, atol=1e-10)
    assert (y[:, 7:] - y2[:, 7:]).abs().max() > 1e-3


def test_count_parameters_by_hand():
    m = nn.Linear(3, 4)
    assert count_parameters(m) == 3 * 4 + 4
    m.z = nn.Parameter(torch.zeros(5, dtype=torch.complex64))
    assert count_parameters(m) == 16 + 2 * 5
    m.bias.requires_grad_(False)
    assert count_parameters(m) == 12 + 10


def test_gru_model_size_by_hand():
    d, layers, V, O = 8, 2, 5, 3
    m = SequenceModel("gru", d_input=V, d_output=O, d_model=d, n_layers=layers, tokens=True)
    gru = 3 * (d * d + d * d + 2 * d)  # three gates, input and hidden weights and biases
    expected = V * d + layers * (2 * d + gru) + 2 * d + d * O + O
    assert count_parameters(m) == expected


@pytest.mark.parametrize("backbone", ["gru", "conv", "transformer"])
def test_width_for_budget_is_closest(backbone):
    kw = {"d_input": 3, "d_output": 2, "n_layers": 2}
    budget = 5000
    d = width_for_budget(backbone, budget, step=4, **kw)

    def gap(width):
        return abs(count_parameters(SequenceModel(backbone, d_model=width, **kw)) - budget)

    assert gap(d) <= gap(d + 4) and (d == 4 or gap(d) <= gap(d - 4))


def test_sinusoidal_positions_closed_form():
    pe = sinusoidal_positions(5, 6)
    assert pe.shape == (5, 6)
    t, i = 3, 2
    assert math.isclose(float(pe[t, 2 * i]), math.sin(t / 10000 ** (2 * i / 6)), rel_tol=1e-6)
    assert math.isclose(float(pe[t, 2 * i + 1]), math.cos(t / 10000 ** (2 * i / 6)), rel_tol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="backbone: expected one of s4, s4d, dss, s6, conv"):
        SequenceModel("lstm", 3, 2)
    with pytest.raises(ValueError, match="readout: expected one of all, last, mean, got 'max'"):
        SequenceModel("gru", 3, 2, readout="max")
    with pytest.raises(ValueError, match="d_model: expected a positive int, got 0"):
        SequenceModel("gru", 3, 2, d_model=0)


def test_bad_inputs():
    tok = SequenceModel("gru", 5, 2, d_model=8, tokens=True)
    with pytest.raises(ValueError, match="x: expected int64 tokens of shape \\(b, L\\)"):
        tok(torch.zeros(2, 3))
    feat = SequenceModel("gru", 3, 2, d_model=8)
    with pytest.raises(ValueError, match="x: expected shape \\(b, L, 3\\), got \\(2, 4, 2\\)"):
        feat(torch.zeros(2, 4, 2))
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
        feat([1.0])


def test_backbones_constant_lists_the_seven_models():
    assert BACKBONES == ("s4", "s4d", "dss", "s6", "conv", "gru", "transformer")


@pytest.mark.parametrize("backbone", [m for m in MODELS if m != "transformer"])
def test_long_sequence_stays_finite(backbone):
    """L = 16 384 (not run for the transformer: its L x L attention matrix alone is 1 GiB)."""
    torch.manual_seed(0)
    m = SequenceModel(backbone, d_input=1, d_output=2, d_model=8, d_state=4, readout="last")
    with torch.no_grad():
        y = m(torch.randn(1, 16_384, 1))
    assert y.shape == (1, 2) and torch.isfinite(y).all()

"""Tests for ssm.linear_scan against an independent closed form and the sequential loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ssm
from ssm.scan import scan_sequential


def closed_form(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """h_t = sum_{s <= t} (prod_{s < r <= t} a_r) b_s, as a dense lower-triangular product."""
    length = a.shape[-1]
    h = np.zeros_like(b)
    for t in range(length):
        for s in range(t + 1):
            h[..., t] += np.prod(a[..., s + 1 : t + 1], axis=-1) * b[..., s]
    return h


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 20])
def test_sequential_matches_closed_form(dtype, length):
    g = torch.Generator().manual_seed(length)
    a = torch.randn(3, length, generator=g, dtype=dtype) * 0.9
    b = torch.randn(3, length, generator=g, dtype=dtype)
    expected = closed_form(a.numpy(), b.numpy())
    # float64: the closed form and the loop differ only by rounding (~1e-15 relative).
    np.testing.assert_allclose(scan_sequential(a, b).numpy(), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        ssm.linear_scan(a, b, method="sequential").numpy(), expected, rtol=1e-10, atol=1e-12
    )

"""Tests for ssm.selective_scan against an independent float64 NumPy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ssm


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, softplus=False):
    """Independent NumPy float64 loop over batch, channel, state and time (no torch)."""
    u, delta, A, B, C = (
        np.asarray(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64)
        for x in (u, delta, A, B, C)
    )
    batch, dim, length = u.shape
    n = A.shape[1]
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, dtype=np.float64)[None, :, None]
    if softplus:
        delta = np.log1p(np.exp(delta))
    y = np.zeros((batch, dim, length))
    last = np.zeros((batch, dim, n), dtype=A.dtype)
    for i in range(batch):
        for d in range(dim):
            h = np.zeros(n, dtype=A.dtype)
            for t in range(length):
                b_t = B[d] if B.ndim == 2 else B[i, :, t]
                c_t = C[d] if C.ndim == 2 else C[i, :, t]
                h = np.exp(delta[i, d, t] * A[d]) * h + delta[i, d, t] * b_t * u[i, d, t]
                out = np.sum(c_t * h)
                y[i, d, t] = 2 * out.real if np.iscomplexobj(out) else out
            last[i, d] = h
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64)[None, :, None] * u
    if z is not None:
        z = np.asarray(z, dtype=np.float64)
        y = y * z / (1 + np.exp(-z))
    return y, last


def make_inputs(batch=2, dim=3, n=4, length=9, variable=True, complex_a=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    u = torch.randn(batch, dim, length, generator=g, dtype=f64)
    delta = torch.randn(batch, dim, length, generator=g, dtype=f64) * 0.5
    A = -torch.rand(dim, n, generator=g, dtype=f64) - 0.5
    if complex_a:
        A = torch.complex(A, torch.randn(dim, n, generator=g, dtype=f64))
    cdt = A.dtype
    shape = (batch, n, length) if variable else (dim, n)
    B = torch.randn(*shape, generator=g, dtype=cdt)
    C = torch.randn(*shape, generator=g, dtype=cdt)
    D = torch.randn(dim, generator=g, dtype=f64)
    z = torch.randn(batch, dim, length, generator=g, dtype=f64)
    delta_bias = torch.randn(dim, generator=g, dtype=f64) * 0.3
    return u, delta, A, B, C, D, z, delta_bias


@pytest.mark.parametrize("variable", [True, False])
@pytest.mark.parametrize("complex_a", [False, True])
def test_sequential_matches_numpy_loop(variable, complex_a):
    u, delta, A, B, C, D, z, bias = make_inputs(variable=variable, complex_a=complex_a)
    y, last = ssm.selective_scan(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        bias,
        delta_softplus=True,
        return_last_state=True,
        method="sequential",
    )
    y_ref, last_ref = reference(u, delta, A, B, C, D, z, bias, softplus=True)
    # float64 throughout: only rounding differs (~1e-15 relative).
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(last.numpy(), last_ref, rtol=1e-10, atol=1e-12)

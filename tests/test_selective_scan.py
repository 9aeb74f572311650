"""Tests for ssm.selective_scan: every method against an independent float64 NumPy loop and
against autograd through the sequential loop, gradcheck of the blocked backward, long
sequences, dispatch and bad inputs."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import ssm
from ssm.scan import CPU_CHUNKED_MAX_STATE, SelectiveScanFn, _auto_method

METHODS = ["sequential", "hillis_steele", "blelloch", "chunked", "auto"]
# float64 throughout: the methods and the NumPy loop differ only by rounding (~1e-15).
TOL64 = {"rtol": 1e-10, "atol": 1e-10}


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


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 100, 300, 1000, 4096])
@pytest.mark.parametrize("variable", [True, False])
@pytest.mark.parametrize("complex_a", [False, True])
def test_forward_matches_numpy_loop(method, length, variable, complex_a):
    u, delta, A, B, C, D, z, bias = make_inputs(
        length=length, variable=variable, complex_a=complex_a, seed=length
    )
    y, last = ssm.selective_scan(
        u, delta, A, B, C, D, z, bias, delta_softplus=True, return_last_state=True, method=method
    )
    y_ref, last_ref = reference(u, delta, A, B, C, D, z, bias, softplus=True)
    np.testing.assert_allclose(y.numpy(), y_ref, **TOL64)
    np.testing.assert_allclose(last.numpy(), last_ref, **TOL64)


def test_optional_arguments_off():
    """No D, no z, no bias, no softplus: the plain recurrence y = C h."""
    u, delta, A, B, C, *_ = make_inputs(length=12)
    delta = delta.abs()
    y_ref, _ = reference(u, delta, A, B, C)
    for method in METHODS:
        np.testing.assert_allclose(
            ssm.selective_scan(u, delta, A, B, C, method=method).numpy(), y_ref, **TOL64
        )


@pytest.mark.parametrize("method", ["hillis_steele", "blelloch", "chunked"])
@pytest.mark.parametrize("length", [1, 2, 3, 7, 64, 100, 1000, 4096])
@pytest.mark.parametrize("variable", [True, False])
@pytest.mark.parametrize("complex_a", [False, True])
def test_backward_matches_sequential(method, length, variable, complex_a):
    inputs = [
        x.requires_grad_(True)
        for x in make_inputs(length=length, variable=variable, complex_a=complex_a)
    ]
    u, delta, A, B, C, D, z, bias = inputs
    g = torch.Generator().manual_seed(length)
    grad_y = torch.randn(u.shape, generator=g, dtype=u.dtype)  # random upstream gradients
    grad_last = torch.randn((u.shape[0], u.shape[1], A.shape[1]), generator=g, dtype=A.dtype)

    def grads(m):
        y, last = ssm.selective_scan(u, delta, A, B, C, D, z, bias, True, True, method=m)
        return torch.autograd.grad((y, last), inputs, (grad_y, grad_last))

    for got, want in zip(grads(method), grads("sequential"), strict=True):
        torch.testing.assert_close(got, want, **TOL64)


@pytest.mark.parametrize("inner", ["sequential", "hillis_steele", "blelloch", "chunked"])
@pytest.mark.parametrize("variable", [True, False])
@pytest.mark.parametrize("complex_a", [False, True])
def test_gradcheck_blocked_function(inner, variable, complex_a):
    """Several blocks of 3 steps, so that the carry of the adjoint between blocks is checked."""
    u, delta, A, B, C, *_ = make_inputs(
        batch=1, dim=2, n=2, length=8, variable=variable, complex_a=complex_a
    )
    inputs = [x.requires_grad_(True) for x in (u, delta, A, B, C)]
    assert torch.autograd.gradcheck(lambda *x: SelectiveScanFn.apply(*x, 3, inner), inputs)


def test_float32_close_to_float64_reference():
    """Mamba's sizes, float32: within 1e-4 of the float64 loop (rounding over 512 steps of a
    contracting recurrence stays ~1e-6 relative; the margin absorbs the sum over N = 16)."""
    u, delta, A, B, C, D, z, bias = make_inputs(batch=2, dim=8, n=16, length=512, seed=1)
    y_ref, _ = reference(u, delta, A, B, C, D, z, bias, softplus=True)
    args32 = [x.float() for x in (u, delta, A, B, C, D, z, bias)]
    for method in METHODS:
        y = ssm.selective_scan(*args32, delta_softplus=True, method=method)
        assert y.dtype == torch.float32
        np.testing.assert_allclose(y.double().numpy(), y_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_long_sequence_finite(method):
    """L = 16 384 in float32, with Delta up to softplus(3): no overflow or NaN, and the same
    output as the sequential loop (float32 rounding, ~1e-6 relative; 1e-4 bound)."""
    u, delta, A, B, C, D, z, bias = (
        x.float() for x in make_inputs(batch=1, dim=4, n=8, length=16_384, seed=2)
    )
    with torch.no_grad():
        y = ssm.selective_scan(u, 6 * delta, A, B, C, D, z, bias, True, method=method)
        y_ref = ssm.selective_scan(u, 6 * delta, A, B, C, D, z, bias, True, method="sequential")
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)


def test_triton_dispatches_lazily(monkeypatch):
    """method='triton' imports ssm.triton_scan only when asked and passes every argument."""
    calls = []
    fake = types.ModuleType("ssm.triton_scan")
    fake.selective_scan_triton = lambda *args: calls.append(args) or "from triton"
    monkeypatch.setitem(sys.modules, "ssm.triton_scan", fake)
    u, delta, A, B, C, D, z, bias = make_inputs()
    out = ssm.selective_scan(u, delta, A, B, C, D, z, bias, True, True, method="triton")
    assert out == "from triton"
    assert calls[0][5] is D and calls[0][6] is z and calls[0][7] is bias
    assert calls[0][8:] == (True, True)


def test_auto_method(monkeypatch):
    small, large = CPU_CHUNKED_MAX_STATE, CPU_CHUNKED_MAX_STATE + 1
    assert _auto_method(torch.device("cpu"), complex_A=False, state_size=small) == "chunked"
    # past the cache-sized state the loop is faster on a CPU (measured in chapter 6)
    assert _auto_method(torch.device("cpu"), complex_A=False, state_size=large) == "sequential"
    assert _auto_method(torch.device("cpu"), complex_A=True, state_size=large) == "sequential"
    monkeypatch.setitem(sys.modules, "ssm.triton_scan", types.ModuleType("ssm.triton_scan"))
    assert _auto_method(torch.device("cuda"), complex_A=False, state_size=large) == "triton"
    # the Triton kernels take real A only: complex A stays on the PyTorch scan
    assert _auto_method(torch.device("cuda"), complex_A=True, state_size=small) == "chunked"
    monkeypatch.setitem(sys.modules, "ssm.triton_scan", None)  # import fails
    assert _auto_method(torch.device("cuda"), complex_A=False, state_size=small) == "chunked"


def test_auto_dispatches_by_state_size(monkeypatch):
    calls = []
    real = ssm.scan._selective_scan_chunked

    def spy(*args, **kwargs):
        calls.append("chunked")
        return real(*args, **kwargs)

    monkeypatch.setattr(ssm.scan, "_selective_scan_chunked", spy)
    # states of 1 * 8 * 4 = 32 and 129 * 8 * 4 = 4128 elements, either side of the threshold
    for batch, expected in ((1, ["chunked"]), (CPU_CHUNKED_MAX_STATE // 32 + 1, [])):
        calls.clear()
        u, delta, A, B, C, D, z, bias = make_inputs(batch=batch, dim=8, n=4, length=5)
        y = ssm.selective_scan(u, delta, A, B, C, D, z, bias, True)
        ref = ssm.selective_scan(u, delta, A, B, C, D, z, bias, True, method="sequential")
        torch.testing.assert_close(y, ref)
        assert calls == expected


def test_errors():
    u, delta, A, B, C, D, z, bias = make_inputs(batch=2, dim=3, n=4, length=9)
    scan = ssm.selective_scan
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, D, L\), got \(3, 9\)"):
        scan(u[0], delta[0], A, B, C)
    with pytest.raises(ValueError, match=r"delta: expected the shape of u .* got \(2, 3, 8\)"):
        scan(u, delta[..., :8], A, B, C)
    with pytest.raises(ValueError, match=r"A: expected shape \(D, N\) = \(3, N\), got \(4, 4\)"):
        scan(u, delta, torch.rand(4, 4, dtype=torch.float64), B, C)
    with pytest.raises(
        ValueError, match=r"B: expected shape \(batch, N, L\) = \(2, 4, 9\), got \(2, 9, 4\)"
    ):
        scan(u, delta, A, B.transpose(1, 2), C)
    with pytest.raises(ValueError, match=r"C: expected shape \(D, N\) = \(3, 4\), got \(4, 3\)"):
        scan(u, delta, A, B, torch.rand(4, 3, dtype=torch.float64))
    with pytest.raises(
        ValueError, match=r"B: expected shape \(D, N\) or \(batch, N, L\), got \(4,\)"
    ):
        scan(u, delta, A, torch.rand(4, dtype=torch.float64), C)
    with pytest.raises(
        TypeError, match="u: expected a floating point or complex dtype, got torch.int64"
    ):
        scan(u.long(), delta, A, B, C)
    with pytest.raises(TypeError, match="B: expected a complex dtype exactly when A is complex"):
        scan(u, delta, A.to(torch.complex128), B, C.to(torch.complex128))
    with pytest.raises(TypeError, match="u: expected a real dtype, got torch.complex128"):
        scan(u.to(torch.complex128), delta, A, B, C)
    with pytest.raises(ValueError, match=r"D: expected shape \(3,\), got \(4,\)"):
        scan(u, delta, A, B, C, D=torch.rand(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"z: expected shape \(2, 3, 9\), got \(2, 3, 8\)"):
        scan(u, delta, A, B, C, z=z[..., :8])
    with pytest.raises(ValueError, match=r"delta_bias: expected shape \(3,\), got \(1,\)"):
        scan(u, delta, A, B, C, delta_bias=bias[:1])
    with pytest.raises(TypeError, match="delta_bias: expected a torch.Tensor, got float"):
        scan(u, delta, A, B, C, delta_bias=0.5)
    with pytest.raises(ValueError, match=r"u: expected L >= 1"):
        scan(u[..., :0], delta[..., :0], A, B[..., :0], C[..., :0])
    with pytest.raises(ValueError, match="method: expected one of .* got 'parallel'"):
        scan(u, delta, A, B, C, method="parallel")


def test_compiled_matches_sequential():
    """method='compiled' (torch.compile of the per-block functions) against the loop, float32,
    forward and all gradients; two full blocks of 64 so that one shape is compiled."""
    u, delta, A, B, C, D, z, bias = (x.float() for x in make_inputs(dim=4, n=8, length=128, seed=3))
    inputs = [x.requires_grad_(True) for x in (u, delta, A, B, C, D, z, bias)]
    grad_y = torch.randn(u.shape, generator=torch.Generator().manual_seed(4))

    def run(method):
        y = ssm.selective_scan(*inputs, delta_softplus=True, method=method)
        return [y, *torch.autograd.grad(y, inputs, grad_y)]

    # float32, and the compiler may reorder sums: ~1e-6 relative; 1e-4 leaves a margin.
    for got, want in zip(run("compiled"), run("sequential"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

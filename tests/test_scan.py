"""Tests for ssm.linear_scan: every method against an independent closed form and against
autograd through the sequential loop, gradcheck of the derived backward, long sequences and
bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.scan import LinearScanFn, reverse_scan, scan_chunked, scan_sequential

PARALLEL = ["hillis_steele", "blelloch", "chunked"]
METHODS = ["sequential", *PARALLEL, "auto"]
LENGTHS = [1, 2, 3, 7, 64, 100, 1000, 4096]
# float64: the methods differ from the loop only by rounding, ~1e-15 relative per step.
TOL64 = {"rtol": 1e-10, "atol": 1e-10}
# float32: rounding of L products/sums with |a| < 1 and |b| ~ 1 gives ~1e-6 relative errors
# that grow slowly with the number of tree levels; 1e-4 leaves a wide margin.
TOL32 = {"rtol": 1e-4, "atol": 1e-4}


def closed_form(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """h_t = sum_{s <= t} (prod_{s < r <= t} a_r) b_s, as a double sum (no recurrence)."""
    length = a.shape[-1]
    h = np.zeros_like(b)
    for t in range(length):
        for s in range(t + 1):
            h[..., t] += np.prod(a[..., s + 1 : t + 1], axis=-1) * b[..., s]
    return h


def random_ab(shape, dtype, seed=0):
    """|a| uniform in (0.5, 1) with a random phase (complex) or sign (real); b standard normal."""
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype in (torch.float64, torch.complex128) else torch.float32
    mag = 0.5 + 0.5 * torch.rand(shape, generator=g, dtype=real)
    if dtype.is_complex:
        phase = torch.exp(1j * 2 * torch.pi * torch.rand(shape, generator=g, dtype=real))
        a = mag * phase
        b = torch.complex(
            torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real)
        )
    else:
        a = mag * torch.sign(torch.randn(shape, generator=g, dtype=real))
        b = torch.randn(shape, generator=g, dtype=real)
    return a.to(dtype), b.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("length", [1, 2, 3, 7, 20])
def test_matches_closed_form(dtype, method, length):
    a, b = random_ab((3, length), dtype, seed=length)
    expected = closed_form(a.numpy(), b.numpy())
    np.testing.assert_allclose(ssm.linear_scan(a, b, method=method).numpy(), expected, **TOL64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
@pytest.mark.parametrize("method", PARALLEL)
@pytest.mark.parametrize("length", LENGTHS)
def test_forward_and_backward_match_sequential(dtype, method, length):
    a, b = random_ab((2, 3, length), dtype, seed=length)
    a.requires_grad_(True)
    b.requires_grad_(True)
    grad_h = random_ab((2, 3, length), dtype, seed=length + 1)[1]  # a random upstream gradient
    h_ref = scan_sequential(a, b)
    ga_ref, gb_ref = torch.autograd.grad(h_ref, (a, b), grad_h)
    h = ssm.linear_scan(a, b, method=method)
    ga, gb = torch.autograd.grad(h, (a, b), grad_h)
    tol = TOL64 if dtype in (torch.float64, torch.complex128) else TOL32
    for got, want in ((h, h_ref), (ga, ga_ref), (gb, gb_ref)):
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("method", PARALLEL)
@pytest.mark.parametrize("length", [1, 5, 8])
def test_gradcheck(dtype, method, length):
    a, b = random_ab((2, length), dtype, seed=3)
    a.requires_grad_(True)
    b.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: LinearScanFn.apply(x, y, method), (a, b))


def test_backward_is_the_reverse_adjoint_recurrence():
    """reverse_scan solves G_t = g_t + conj(a_{t+1}) G_{t+1}, checked by a backwards loop."""
    a, g = random_ab((4, 33), torch.complex128, seed=5)
    expected = torch.zeros_like(g)
    acc = torch.zeros_like(g[..., 0])
    for t in reversed(range(33)):
        acc = g[..., t] + (a[..., t + 1].conj() * acc if t + 1 < 33 else 0)
        expected[..., t] = acc
    for method in ["sequential", *PARALLEL]:
        torch.testing.assert_close(reverse_scan(a, g, method), expected, **TOL64)


def test_saves_only_its_inputs():
    """The custom Function keeps a and b for backward and nothing of size (..., L) more."""
    a, b = random_ab((3, 50), torch.float64, seed=7)
    a.requires_grad_(True)
    saved = []

    def pack(x):
        saved.append(x)
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ssm.linear_scan(a, b, method="chunked")
    assert sum(x.numel() for x in saved) == a.numel() + b.numel()


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100, 200])
def test_chunked_any_chunk_length(chunk):
    a, b = random_ab((2, 100), torch.float64, seed=chunk)
    torch.testing.assert_close(scan_chunked(a, b, chunk=chunk), scan_sequential(a, b), **TOL64)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    length=st.integers(1, 70),
    method=st.sampled_from(PARALLEL),
    is_complex=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_property_random_shapes(batch, length, method, is_complex, seed):
    dtype = torch.complex128 if is_complex else torch.float64
    a, b = random_ab((*batch, length), dtype, seed=seed)
    torch.testing.assert_close(ssm.linear_scan(a, b, method=method), scan_sequential(a, b), **TOL64)


@pytest.mark.parametrize("method", METHODS)
def test_long_sequence_is_finite_and_correct(method):
    """L = 65 536 in float32 with |a| close to 1: no overflow, no NaN, no drift."""
    length = 65_536
    a, b = random_ab((2, length), torch.float32, seed=11)
    a = a.abs() ** 0.01  # in (0.993, 1): the state remembers thousands of steps
    h = ssm.linear_scan(a, b, method=method)
    assert torch.isfinite(h).all()
    # float64 reference; float32 error of a long recurrence with |a| ~ 1 grows ~ sqrt(L) eps
    # times the state's magnitude (~ 30 here), so 1e-3 absolute is a safe bound.
    ref = scan_sequential(a.double(), b.double())
    torch.testing.assert_close(h.double(), ref, rtol=1e-3, atol=1e-3)


def test_errors():
    a = torch.rand(2, 5)
    with pytest.raises(
        ValueError, match=r"a, b: expected the same shape .* got a \(2, 5\) and b \(2, 4\)"
    ):
        ssm.linear_scan(a, torch.rand(2, 4))
    with pytest.raises(
        TypeError, match="b: expected a floating point or complex dtype, got torch.int64"
    ):
        ssm.linear_scan(a, torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="a: expected a torch.Tensor, got ndarray"):
        ssm.linear_scan(np.ones((2, 5)), a)
    with pytest.raises(TypeError, match="a, b: expected the same dtype"):
        ssm.linear_scan(a, a.double())
    with pytest.raises(
        ValueError, match=r"a: expected shape \(\.\.\., L\) with L >= 1, got \(2, 0\)"
    ):
        ssm.linear_scan(torch.rand(2, 0), torch.rand(2, 0))
    with pytest.raises(ValueError, match=r"a: expected shape \(\.\.\., L\) with L >= 1, got \(\)"):
        ssm.linear_scan(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="method: expected one of .* got 'fast'"):
        ssm.linear_scan(a, a, method="fast")
    with pytest.raises(ValueError, match="method: 'triton' is provided for selective_scan only"):
        ssm.linear_scan(a, a, method="triton")

"""S4D and DSS (chapter 4): diagonal initialisations, Vandermonde and softmax kernels.

The reference for every kernel is the *full* ``N``-state system written as a dense complex
matrix ``diag(A, conj A)``, discretized by :func:`ssm.discretize` (ZOH by one matrix
exponential of a block matrix, bilinear by a linear solve) and unrolled by the naive loop.
"""

from __future__ import annotations

import math

import pytest
import torch

import ssm
from ssm.s4d import dss_kernel, dss_softmax


def random_modes(H: int, M: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    A = torch.complex(
        -torch.rand(H, M, dtype=torch.float64, generator=g) - 0.01,
        5 * torch.randn(H, M, dtype=torch.float64, generator=g),
    )
    B = torch.randn(H, M, dtype=torch.complex128, generator=g)
    C = torch.randn(H, M, dtype=torch.complex128, generator=g)
    return A, B, C


def dense_pair_kernel(A, B, C, dt, L, method):
    """The N-state system diag(A, conj A) as a dense matrix, discretized and unrolled."""
    A_dense = torch.diag_embed(torch.cat([A, A.conj()], -1))
    B_full, C_full = (torch.cat([x, x.conj()], -1) for x in (B, C))
    A_bar, B_bar = ssm.discretize(A_dense, B_full, dt, method)
    K = ssm.ssm_kernel(A_bar, B_bar, C_full, L)
    # a conjugate-symmetric system has a real kernel: imaginary part is rounding only
    assert K.imag.abs().max() < 1e-10 * K.real.abs().max()
    return K.real


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("L", [1, 5, 100, 333])
def test_s4d_kernel_matches_dense_pairs(method: str, L: int) -> None:
    A, B, C = random_modes(3, 4, seed=L)
    dt = torch.tensor([0.001, 0.1, 1.0], dtype=torch.float64)
    K = ssm.s4d_kernel(A, B, C, dt, L, method)
    assert K.shape == (3, L) and K.dtype == torch.float64
    # float64 rounding only (observed ~1e-15)
    torch.testing.assert_close(K, dense_pair_kernel(A, B, C, dt, L, method), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["legs", "inv", "lin"])
def test_s4d_kernel_with_inits_unbatched(kind: str) -> None:
    A = ssm.s4d_init(16, kind)
    B = torch.ones_like(A)
    C = torch.randn(8, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    K = ssm.s4d_kernel(A, B, C, 0.05, 50)
    assert K.shape == (50,)
    torch.testing.assert_close(
        K, dense_pair_kernel(A, B, C, 0.05, 50, "zoh"), rtol=1e-10, atol=1e-12
    )


def test_s4d_init_formulas() -> None:
    N = 12
    n = torch.arange(N // 2, dtype=torch.float64)
    lin, inv, legs = (ssm.s4d_init(N, kind) for kind in ("lin", "inv", "legs"))
    assert lin.shape == inv.shape == legs.shape == (N // 2,)
    assert lin.dtype == torch.complex128
    torch.testing.assert_close(lin.imag, math.pi * n, rtol=0, atol=0)
    torch.testing.assert_close(inv.imag, N / math.pi * (N / (2 * n + 1) - 1), rtol=1e-15, atol=0)
    for A in (lin, inv, legs):
        torch.testing.assert_close(A.real, torch.full((N // 2,), -0.5, dtype=torch.float64))
    # S4D-LegS: the eigenvalues of the normal part S of HiPPO-LegS with positive imaginary part
    S = ssm.hippo(N)[0] + torch.outer(*(torch.sqrt(n.new_tensor(range(N)) + 0.5),) * 2)
    eig = torch.linalg.eigvals(S)
    expected = eig[eig.imag > 0]
    expected = expected[expected.imag.argsort()]
    torch.testing.assert_close(legs[legs.imag.argsort()], expected, rtol=1e-10, atol=1e-10)


def test_s4d_kernel_long_is_finite() -> None:
    for kind in ("legs", "inv", "lin"):
        A = ssm.s4d_init(64, kind).to(torch.complex64).expand(2, 32)
        C = torch.randn(2, 32, dtype=torch.complex64)
        for method in ("zoh", "bilinear"):
            K = ssm.s4d_kernel(A, torch.ones_like(A), C, torch.tensor([1e-3, 0.1]), 16384, method)
            assert torch.isfinite(K).all()
        assert torch.isfinite(dss_kernel(A, C, torch.tensor([1e-3, 0.1]), 16384)).all()


def test_s4d_kernel_gradcheck() -> None:
    A, B, C = (x[:, :3].clone().requires_grad_() for x in random_modes(2, 3, seed=3))
    dt = torch.tensor([0.2, 0.9], dtype=torch.float64, requires_grad=True)
    for method in ("zoh", "bilinear"):
        assert torch.autograd.gradcheck(
            lambda A, B, C, dt, m=method: ssm.s4d_kernel(A, B, C, dt, 7, m), (A, B, C, dt)
        )


def test_dss_kernel_matches_explicit_softmax_and_zoh_system() -> None:
    Lambda, W, _ = random_modes(2, 3, seed=9)
    dt = torch.tensor([0.05, 0.5], dtype=torch.float64)
    L = 40
    K = dss_kernel(Lambda, W, dt, L)
    # explicit double loop over modes and positions
    ref = torch.zeros(2, L, dtype=torch.float64)
    for h in range(2):
        for n in range(3):
            z = torch.exp(dt[h] * Lambda[h, n])
            norm = sum(z**r for r in range(L))
            for l in range(L):
                ref[h, l] += 2 * (W[h, n] / Lambda[h, n] * z**l / norm).real
    torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-12)
    # the same kernel is the ZOH kernel of the system with C_n B_n = W_n / (exp(L dt Lambda_n) - 1)
    C = W / torch.expm1(L * dt[:, None] * Lambda)
    zoh = dense_pair_kernel(Lambda, torch.ones_like(C), C, dt, L, "zoh")
    torch.testing.assert_close(K, zoh, rtol=1e-10, atol=1e-12)


def test_dss_kernel_bounded_for_positive_real_parts() -> None:
    Lambda = torch.complex(torch.full((4,), 0.5), torch.arange(4.0))
    W = torch.ones(4, dtype=torch.complex64)
    K = dss_kernel(Lambda.to(torch.complex64), W, 1.0, 4096)
    assert torch.isfinite(K).all()
    x = torch.tensor([0.0, 1j, 3 + 2j], dtype=torch.complex128)
    torch.testing.assert_close(dss_softmax(x), torch.exp(x) / torch.exp(x).sum())


def test_dss_kernel_gradcheck() -> None:
    Lambda, W, _ = (x.requires_grad_() for x in random_modes(2, 2, seed=4))
    dt = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: dss_kernel(*a, 6), (Lambda, W, dt))


def test_bad_inputs() -> None:
    A, B, C = random_modes(2, 3)
    dt = torch.tensor([0.1, 0.2], dtype=torch.float64)
    with pytest.raises(ValueError, match="N: expected an even state size"):
        ssm.s4d_init(9)
    with pytest.raises(ValueError, match="kind: expected one of"):
        ssm.s4d_init(8, "fourier")
    with pytest.raises(ValueError, match=r"C: expected shape \(H, N/2\) or \(N/2,\) equal to A"):
        ssm.s4d_kernel(A, B, C[:, :2], dt, 8)
    with pytest.raises(ValueError, match="B: expected shape"):
        ssm.s4d_kernel(A, B[None], C, dt, 8)
    with pytest.raises(TypeError, match="A: expected a complex tensor"):
        ssm.s4d_kernel(A.real, B, C, dt, 8)
    with pytest.raises(ValueError, match="dt: expected positive"):
        ssm.s4d_kernel(A, B, C, torch.tensor([0.1, 0.0], dtype=torch.float64), 8)
    with pytest.raises(ValueError, match=r"dt: expected a scalar or shape \(2,\)"):
        ssm.s4d_kernel(A, B, C, torch.ones(3), 8)
    with pytest.raises(ValueError, match="method: expected 'zoh' or 'bilinear'"):
        ssm.s4d_kernel(A, B, C, dt, 8, "euler")
    with pytest.raises(ValueError, match="L: expected a length"):
        ssm.s4d_kernel(A, B, C, dt, 0)
    with pytest.raises(ValueError, match="dt: expected positive"):
        dss_kernel(A, C, -1.0, 8)
    with pytest.raises(ValueError, match="W: expected shape"):
        dss_kernel(A, C[0], dt, 8)

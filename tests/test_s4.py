"""S4 (chapter 3): DPLR form of HiPPO and the Cauchy + Woodbury kernel.

References are independent of the code under test: the dense HiPPO matrix, the dense bilinear
discretization (a linear solve) and the naive kernel ``C A_bar^l B_bar`` by repeated products.
"""

from __future__ import annotations

import pytest
import torch

import ssm
from ssm.s4 import dplr_bilinear, dplr_matrix, nplr_legs

# float64 derivation checks: the fast kernel and the naive loop differ only by rounding, and
# ~1e-12 relative is still 1000x above what we observe (~1e-15).
RTOL = 1e-10


def random_dplr(shape: tuple[int, ...], N: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A random stable DPLR system (Lambda, P, B, C) with no conjugate symmetry."""
    g = torch.Generator().manual_seed(seed)

    def c(*s: int) -> torch.Tensor:
        return torch.randn(*s, dtype=torch.complex128, generator=g)

    Lambda = torch.complex(
        -torch.rand(*shape, N, dtype=torch.float64, generator=g) - 0.05,
        4 * torch.randn(*shape, N, dtype=torch.float64, generator=g),
    )
    return Lambda, c(*shape, N), c(*shape, N), c(*shape, N)


def naive_bilinear_kernel(Lambda, P, B, C, dt, L):
    """Dense A = diag(Lambda) - P P^*, bilinear by ssm.discretize, K_l = C A_bar^l B_bar."""
    A_bar, B_bar = ssm.discretize(dplr_matrix(Lambda, P), B, dt, "bilinear")
    return ssm.ssm_kernel(A_bar, B_bar, C, L).real


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("N", [2, 8, 16, 64])
def test_dplr_reconstructs_hippo_legs(N: int) -> None:
    A, B_real = ssm.hippo(N, "legs")
    Lambda, P, B, V = ssm.dplr(N)
    eye = torch.eye(N, dtype=torch.complex128)
    torch.testing.assert_close(V.conj().T @ V, eye, rtol=0, atol=1e-12)  # V unitary
    A_rebuilt = V @ dplr_matrix(Lambda, P) @ V.conj().T
    # entries of A grow like N; 1e-12 relative to that scale
    torch.testing.assert_close(A_rebuilt, A.to(torch.complex128), rtol=0, atol=1e-12 * N)
    torch.testing.assert_close(V @ B, B_real.to(torch.complex128), rtol=0, atol=1e-12 * N)
    torch.testing.assert_close(Lambda.real, torch.full((N,), -0.5, dtype=torch.float64))
    assert torch.all(Lambda.imag[: N // 2] > 0)
    torch.testing.assert_close(Lambda[N // 2 :], Lambda[: N // 2].conj(), rtol=0, atol=0)
    torch.testing.assert_close(P[N // 2 :], P[: N // 2].conj(), rtol=0, atol=1e-13)


def test_nplr_normal_part_is_half_identity_plus_skew() -> None:
    S, P, _ = nplr_legs(10)
    A, _ = ssm.hippo(10)
    torch.testing.assert_close(S - torch.outer(P, P), A, rtol=0, atol=1e-12)
    skew = S + 0.5 * torch.eye(10, dtype=torch.float64)
    torch.testing.assert_close(skew, -skew.T, rtol=0, atol=1e-12)


def test_dplr_bilinear_matches_dense_solve() -> None:
    Lambda, P, B, _ = random_dplr((3,), 6)
    dt = torch.tensor([0.01, 0.3, 2.0], dtype=torch.float64)
    A_bar, B_bar = dplr_bilinear(Lambda, P, B, dt)
    A_ref, B_ref = ssm.discretize(dplr_matrix(Lambda, P), B, dt, "bilinear")
    torch.testing.assert_close(A_bar, A_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, B_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [1, 2, 7, 64, 100, 257])
def test_s4_kernel_matches_dense_bilinear_hippo(L: int) -> None:
    Lambda, P, B, _ = ssm.dplr(16)
    C = torch.randn(16, dtype=torch.complex128, generator=torch.Generator().manual_seed(L))
    K = ssm.s4_kernel(Lambda, P, B, C, 0.05, L)
    assert K.dtype == torch.float64 and K.shape == (L,)
    assert relative_error(K, naive_bilinear_kernel(Lambda, P, B, C, 0.05, L)) < RTOL


@pytest.mark.parametrize("L", [1, 2, 7, 64, 99])
def test_s4_kernel_pairs_uses_half_the_frequencies(L: int) -> None:
    """With conjugate pairs, pairs=True (irfft of L//2+1 values) equals the naive kernel."""
    Lambda, P, B, _ = ssm.dplr(16)
    half = torch.randn(8, dtype=torch.complex128, generator=torch.Generator().manual_seed(L))
    C = torch.cat([half, half.conj()])
    K = ssm.s4_kernel(Lambda, P, B, C, 0.1, L, pairs=True)
    assert K.shape == (L,)
    assert relative_error(K, naive_bilinear_kernel(Lambda, P, B, C, 0.1, L)) < RTOL


@pytest.mark.parametrize("L", [1, 31, 128])
def test_s4_kernel_random_complex_batched(L: int) -> None:
    Lambda, P, B, C = random_dplr((4,), 8, seed=L)
    dt = torch.tensor([0.001, 0.05, 0.5, 1.5], dtype=torch.float64)
    K = ssm.s4_kernel(Lambda, P, B, C, dt, L)
    assert K.shape == (4, L)
    assert relative_error(K, naive_bilinear_kernel(Lambda, P, B, C, dt, L)) < RTOL


def test_s4_kernel_float32_close_to_float64() -> None:
    Lambda, P, B, _ = ssm.dplr(32)
    C = torch.randn(32, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    K64 = ssm.s4_kernel(Lambda, P, B, C, 0.01, 1000)
    args32 = (x.to(torch.complex64) for x in (Lambda, P, B, C))
    K32 = ssm.s4_kernel(*args32, 0.01, 1000)
    assert K32.dtype == torch.float32
    # single precision through a Woodbury division and an FFT of length 1000: 1e-4 relative
    assert relative_error(K32.double(), K64) < 1e-4


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_s4_kernel_long_is_finite(dtype: torch.dtype) -> None:
    Lambda, P, B, _ = ssm.dplr(64)
    C = torch.randn(64, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))
    for dt in (1e-3, 1e-1, 1.0):
        K = ssm.s4_kernel(*(x.to(dtype) for x in (Lambda, P, B, C)), dt, 16384)
        assert torch.isfinite(K).all()


def test_s4_kernel_long_matches_naive_float64() -> None:
    Lambda, P, B, _ = ssm.dplr(4)
    C = torch.randn(4, dtype=torch.complex128, generator=torch.Generator().manual_seed(3))
    K = ssm.s4_kernel(Lambda, P, B, C, 0.01, 16384)
    assert relative_error(K, naive_bilinear_kernel(Lambda, P, B, C, 0.01, 16384)) < 1e-8


def test_s4_kernel_gradcheck() -> None:
    Lambda, P, B, C = (x.requires_grad_() for x in random_dplr((2,), 4, seed=5))
    dt = torch.tensor([0.1, 0.7], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: ssm.s4_kernel(*a, 9), (Lambda, P, B, C, dt))


def test_s4_kernel_gradient_matches_naive() -> None:
    """Gradients of the fast kernel equal those of the dense naive kernel (autograd of a loop)."""
    inputs = random_dplr((), 6, seed=7)
    grads = []
    for kernel in (ssm.s4_kernel, naive_bilinear_kernel):
        leaves = [x.clone().requires_grad_() for x in inputs]
        kernel(*leaves, 0.2, 20).pow(2).sum().backward()
        grads.append([x.grad for x in leaves])
    for fast, ref in zip(*grads, strict=True):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-10)


def test_dplr_bad_input() -> None:
    with pytest.raises(ValueError, match="N: expected an even state size"):
        ssm.dplr(7)
    with pytest.raises(TypeError, match="N: expected an int"):
        ssm.dplr(8.0)
    with pytest.raises(ValueError, match="measure: expected 'legs'"):
        ssm.dplr(8, measure="fourier")


def test_s4_kernel_bad_input() -> None:
    Lambda, P, B, C = random_dplr((), 4)
    with pytest.raises(ValueError, match="dt: expected positive"):
        ssm.s4_kernel(Lambda, P, B, C, 0.0, 8)
    with pytest.raises(ValueError, match="dt: expected positive"):
        ssm.s4_kernel(Lambda, P, B, C, torch.tensor(-0.1), 8)
    with pytest.raises(ValueError, match=r"P: expected the shape of Lambda \(4,\)"):
        ssm.s4_kernel(Lambda, P[:3], B, C, 0.1, 8)
    with pytest.raises(ValueError, match="C: expected the shape of Lambda"):
        ssm.s4_kernel(Lambda, P, B, C.expand(2, 4), 0.1, 8)
    with pytest.raises(TypeError, match="B: expected a complex tensor"):
        ssm.s4_kernel(Lambda, P, B.real, C, 0.1, 8)
    with pytest.raises(TypeError, match="C: expected a torch.Tensor"):
        ssm.s4_kernel(Lambda, P, B, [1, 2, 3, 4], 0.1, 8)
    with pytest.raises(ValueError, match="L: expected a length L >= 1"):
        ssm.s4_kernel(Lambda, P, B, C, 0.1, 0)
    with pytest.raises(TypeError, match="L: expected an int"):
        ssm.s4_kernel(Lambda, P, B, C, 0.1, 8.0)
    with pytest.raises(TypeError, match="dt: expected a real step size"):
        ssm.s4_kernel(Lambda, P, B, C, torch.tensor(0.1j), 8)

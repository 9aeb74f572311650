"""ssm.ssm_kernel against an explicit recurrence and a matrix-power closed form."""

import pytest
import torch

from ssm import discretize, ssm_kernel


def system(N, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=torch.float64) / N**0.5 - torch.eye(N)
    B, C = torch.randn(2, N, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        A = A + 1j * torch.randn(N, N, generator=g, dtype=torch.float64) / N**0.5
        C = C + 1j * torch.randn(N, generator=g, dtype=torch.float64)
    A_bar, B_bar = discretize(A.to(dtype), B.to(dtype), 0.1)
    return A_bar, B_bar, C.to(dtype)


def recurrence(A_bar, B_bar, C, u):
    """Reference: run h_k = A_bar h_{k-1} + B_bar u_k, y_k = C h_k."""
    h = torch.zeros_like(B_bar)
    ys = []
    for u_k in u:
        h = A_bar @ h + B_bar * u_k
        ys.append(C @ h)
    return torch.stack(ys)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("L", [1, 2, 7, 64])
def test_kernel_convolution_equals_recurrence(dtype, L):
    A_bar, B_bar, C = system(5, dtype)
    u = torch.randn(L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    K = ssm_kernel(A_bar, B_bar, C, L)
    assert K.shape == (L,) and K.dtype == dtype
    y_conv = torch.stack([(K[: k + 1].flip(0) * u[: k + 1]).sum() for k in range(L)])
    # float64 sums of at most 64 products: 1e-12 relative.
    torch.testing.assert_close(y_conv, recurrence(A_bar, B_bar, C, u), rtol=1e-12, atol=1e-12)


def test_kernel_is_impulse_response_and_matrix_powers():
    A_bar, B_bar, C = system(4, torch.float64)
    L = 9
    impulse = torch.zeros(L, dtype=torch.float64)
    impulse[0] = 1
    K = ssm_kernel(A_bar, B_bar, C, L)
    torch.testing.assert_close(K, recurrence(A_bar, B_bar, C, impulse), rtol=1e-12, atol=1e-14)
    powers = torch.stack([C @ torch.linalg.matrix_power(A_bar, l) @ B_bar for l in range(L)])
    torch.testing.assert_close(K, powers, rtol=1e-12, atol=1e-14)


def test_diagonal_and_batched():
    g = torch.Generator().manual_seed(2)
    H, N, L = 3, 4, 11
    A_bar = 0.9 * torch.exp(1j * torch.rand(H, N, generator=g, dtype=torch.float64))
    B_bar = torch.randn(H, N, generator=g, dtype=torch.complex128)
    C = torch.randn(H, N, generator=g, dtype=torch.complex128)
    K = ssm_kernel(A_bar, B_bar, C, L)
    assert K.shape == (H, L)
    closed = (C[:, :, None] * B_bar[:, :, None] * A_bar[:, :, None] ** torch.arange(L)).sum(1)
    torch.testing.assert_close(K, closed, rtol=1e-12, atol=1e-12)
    for h in range(H):
        dense = ssm_kernel(torch.diag(A_bar[h]), B_bar[h], C[h], L)
        torch.testing.assert_close(K[h], dense, rtol=1e-12, atol=1e-12)


def test_long_stable_kernel_is_finite_float32():
    # L = 16384 in float32 with |eig| < 1: the kernel decays and never overflows or NaNs.
    A_bar, B_bar, C = (t.float() for t in system(4, torch.float64))
    K = ssm_kernel(A_bar, B_bar, C, 16384)
    assert torch.isfinite(K).all() and K[-1].abs() < 1e-6


def test_gradients_flow():
    A_bar, B_bar, C = (t.clone().requires_grad_() for t in system(3, torch.float64))
    assert torch.autograd.gradcheck(lambda a, b, c: ssm_kernel(a, b, c, 5), (A_bar, B_bar, C))


def test_bad_inputs():
    A_bar, B_bar, C = system(3, torch.float64)
    with pytest.raises(ValueError, match=r"L: expected a length L >= 1, got 0"):
        ssm_kernel(A_bar, B_bar, C, 0)
    with pytest.raises(TypeError, match=r"L: expected an int"):
        ssm_kernel(A_bar, B_bar, C, 4.0)
    with pytest.raises(ValueError, match=r"C: expected shape"):
        ssm_kernel(A_bar, B_bar, C[:2], 4)
    with pytest.raises(ValueError, match=r"A_bar: expected a dense"):
        ssm_kernel(A_bar[:2], B_bar, C, 4)
    with pytest.raises(TypeError, match=r"B_bar: expected a torch.Tensor"):
        ssm_kernel(A_bar, [1.0, 2.0, 3.0], C, 4)

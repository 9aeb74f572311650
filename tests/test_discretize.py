"""ssm.discretize against closed forms, torch.matrix_exp, scipy's ODE solver and each other."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ssm import discretize

METHODS = ["zoh", "bilinear", "euler"]


def random_system(N, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, N, generator=g, dtype=torch.float64) - 2 * torch.eye(N, dtype=torch.float64)
    B = torch.randn(N, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        A = A + 1j * torch.randn(N, N, generator=g, dtype=torch.float64)
        B = B + 1j * torch.randn(N, generator=g, dtype=torch.float64)
    return A.to(dtype), B.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_zoh_dense_matches_inverse_formula(dtype):
    # Reference: A_bar = matrix_exp(dt A), B_bar = A^{-1}(A_bar - I) B (A invertible here).
    A, B = random_system(5, dtype)
    dt = 0.3
    A_ref = torch.linalg.matrix_exp(dt * A)
    B_ref = torch.linalg.solve(A, (A_ref - torch.eye(5, dtype=dtype)) @ B)
    A_bar, B_bar = discretize(A, B, dt, "zoh")
    # float64 round-off of a 6x6 matrix exponential and a solve: 1e-12 is ample.
    torch.testing.assert_close(A_bar, A_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, B_ref, rtol=1e-12, atol=1e-12)


def test_zoh_is_exact_for_constant_input():
    # Reference: scipy's adaptive RK integrates x' = A x + B u from x(0) = x0 over one step.
    A, B = random_system(4)
    x0 = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dt, u = 0.7, 1.3
    A_bar, B_bar = discretize(A, B, dt, "zoh")
    sol = solve_ivp(
        lambda t, x: A.numpy() @ x + B.numpy() * u, (0, dt), x0.numpy(), rtol=1e-12, atol=1e-12
    )
    # The ODE solver's tolerance (1e-12 per step, accumulated) bounds the agreement.
    np.testing.assert_allclose((A_bar @ x0 + B_bar * u).numpy(), sol.y[:, -1], atol=1e-9)


def test_zoh_singular_A():
    # A = 0: x' = B u, so B_bar = dt B exactly; A nilpotent [[0,1],[0,0]]: closed form.
    B = torch.tensor([1.0, 2.0], dtype=torch.float64)
    A_bar, B_bar = discretize(torch.zeros(2, 2, dtype=torch.float64), B, 0.5, "zoh")
    torch.testing.assert_close(A_bar, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(B_bar, 0.5 * B)
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    A_bar, B_bar = discretize(A, B, 0.5, "zoh")
    # exp(dt A) = I + dt A; int_0^dt exp(sA) ds B = (dt I + dt^2/2 A) B.
    torch.testing.assert_close(A_bar, torch.eye(2, dtype=torch.float64) + 0.5 * A)
    torch.testing.assert_close(B_bar, torch.tensor([0.5 + 0.125 * 2.0, 1.0], dtype=torch.float64))
    A_bar, B_bar = discretize(torch.zeros(2, dtype=torch.float64), B, 0.5, "zoh")
    torch.testing.assert_close(B_bar, 0.5 * B)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_bilinear_and_euler_closed_forms(dtype):
    A, B = random_system(4, dtype)
    dt = 0.2
    eye = torch.eye(4, dtype=dtype)
    inv = torch.linalg.inv(eye - dt / 2 * A)
    A_bar, B_bar = discretize(A, B, dt, "bilinear")
    torch.testing.assert_close(A_bar, inv @ (eye + dt / 2 * A), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, inv @ (dt * B), rtol=1e-12, atol=1e-12)
    A_bar, B_bar = discretize(A, B, dt, "euler")
    torch.testing.assert_close(A_bar, eye + dt * A, rtol=0, atol=0)
    torch.testing.assert_close(B_bar, dt * B, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_diagonal_equals_dense_of_diag(method, dtype):
    _, B = random_system(6, dtype)
    a = -torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) - 0.1
    if dtype.is_complex:
        a = a + 1j * torch.linspace(-3, 3, 6, dtype=torch.float64)
    a = a.to(dtype)
    A_diag, B_diag = discretize(a, B, 0.4, method)
    A_dense, B_dense = discretize(torch.diag(a), B, 0.4, method)
    torch.testing.assert_close(torch.diag(A_diag), A_dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_diag, B_dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_methods_agree_as_dt_goes_to_zero(method):
    # All three are consistent: A_bar = I + dt A + O(dt^2), B_bar = dt B + O(dt^2).
    A, B = random_system(4)
    eye = torch.eye(4, dtype=torch.float64)
    errors = []
    for dt in [1e-2, 1e-3, 1e-4]:
        A_bar, B_bar = discretize(A, B, dt, method)
        errors.append(float((A_bar - eye - dt * A).abs().max() + (B_bar - dt * B).abs().max()))
        # Second-order remainder: |error| <= C dt^2 with C ~ ||A||^2 (here < 50).
        assert errors[-1] < 50 * dt**2
    zoh = discretize(A, B, 1e-3, "zoh")
    other = discretize(A, B, 1e-3, method)
    torch.testing.assert_close(other[0], zoh[0], rtol=0, atol=5e-5)


def test_bilinear_matches_zoh_to_third_order():
    # Tustin is the (1,1) Pade approximant of exp: A_bar error O(dt^3).
    A, B = random_system(4)
    for dt in [1e-2, 1e-3]:
        err = (discretize(A, B, dt, "bilinear")[0] - discretize(A, B, dt, "zoh")[0]).abs().max()
        assert err < 50 * dt**3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("diagonal", [True, False])
def test_batched_over_channels(method, diagonal):
    A, B = random_system(3, torch.complex128)
    if diagonal:
        A = torch.diagonal(A)
    dt = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    A_bar, B_bar = discretize(A, B, dt, method)
    assert A_bar.shape == (4, *A.shape) and B_bar.shape == (4, 3)
    for h in range(4):
        A_h, B_h = discretize(A, B, float(dt[h]), method)
        torch.testing.assert_close(A_bar[h], A_h, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(B_bar[h], B_h, rtol=1e-12, atol=1e-12)


def test_batched_per_channel_A():
    # S4D style: A (H, N) diagonal, B (H, N), dt (H,).
    g = torch.Generator().manual_seed(5)
    A = -torch.rand(2, 3, generator=g, dtype=torch.float64) + 1j * torch.randn(2, 3, generator=g)
    B = torch.randn(2, 3, generator=g, dtype=torch.complex128)
    dt = torch.tensor([0.1, 0.3], dtype=torch.float64)
    A_bar, B_bar = discretize(A, B, dt, "zoh")
    torch.testing.assert_close(A_bar, torch.exp(dt[:, None] * A), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(B_bar, (A_bar - 1) / A * B, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_gradients_flow():
    A, B = random_system(3)
    A = A.float().requires_grad_()
    B = B.float().requires_grad_()
    A_bar, B_bar = discretize(A, B, 0.1)
    assert A_bar.dtype == torch.float32 and B_bar.dtype == torch.float32
    (A_bar.sum() + B_bar.sum()).backward()
    assert torch.isfinite(A.grad).all() and torch.isfinite(B.grad).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("diagonal", [True, False])
def test_gradcheck(method, diagonal):
    A, B = random_system(3, torch.complex128)
    A = (torch.diagonal(A) if diagonal else A).requires_grad_()
    B = B.requires_grad_()
    dt = torch.tensor([0.3, 0.6], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, B, dt: discretize(A, B, dt, method), (A, B, dt))


def test_bad_inputs():
    A, B = random_system(3)
    with pytest.raises(ValueError, match=r"A: expected a square"):
        discretize(torch.zeros(3, 4, dtype=torch.float64), B, 0.1)
    with pytest.raises(ValueError, match=r"A: a diagonal A must have shape"):
        discretize(torch.zeros(4, dtype=torch.float64), B, 0.1)
    with pytest.raises(ValueError, match=r"A: expected a square .* N = 2"):
        discretize(A, B[:2], 0.1)
    with pytest.raises(ValueError, match=r"A: expected a dense"):
        discretize(torch.zeros(1, 3, 3, 3), B, 0.1)
    with pytest.raises(ValueError, match=r"dt: expected positive"):
        discretize(A, B, 0.0)
    with pytest.raises(ValueError, match=r"dt: expected positive"):
        discretize(A, B, torch.tensor([0.1, -0.1]))
    with pytest.raises(TypeError, match=r"dt: expected a real"):
        discretize(A, B, torch.tensor(0.1j))
    with pytest.raises(TypeError, match=r"dt: expected a float"):
        discretize(A, B, "0.1")
    with pytest.raises(TypeError, match=r"A: expected a torch.Tensor"):
        discretize(A.numpy(), B, 0.1)
    with pytest.raises(ValueError, match=r"method: expected one of .* got 'rk4'"):
        discretize(A, B, 0.1, "rk4")
    with pytest.raises(ValueError, match=r"B: expected shape"):
        discretize(A, torch.tensor(1.0), 0.1)

"""ssm.hippo against its closed form and against the HiPPO claim, checked by an ODE solver."""

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from scipy.integrate import solve_ivp

from ssm import hippo, hippo_coefficients, hippo_reconstruct, legendre_basis


def project(f, a, b, N, nodes=64):
    """Reference: coefficients of f on [a, b] in g_n(x) = sqrt(2n+1) P_n(x), x = 1 at s = b.

    c_n = (1/2) int_{-1}^{1} f(s(x)) g_n(x) dx by Gauss-Legendre quadrature (numpy).
    """
    x, w = npleg.leggauss(nodes)
    s = a + (x + 1) / 2 * (b - a)
    g = np.stack([np.sqrt(2 * n + 1) * npleg.legval(x, np.eye(N)[n]) for n in range(N)])
    return g @ (w * f(s)) / 2


def poly(s):
    return 1.0 - 0.3 * s + 0.02 * s**2 - 0.0005 * s**3


@pytest.mark.parametrize("N", [1, 2, 5, 8])
def test_legs_closed_form_entry_by_entry(N):
    A, B = hippo(N, "legs")
    assert A.dtype == torch.float64 and A.shape == (N, N) and B.shape == (N,)
    for n in range(N):
        assert B[n] == np.sqrt(2 * n + 1)
        for k in range(N):
            expected = -np.sqrt((2 * n + 1) * (2 * k + 1)) if n > k else -(n + 1) if n == k else 0
            assert A[n, k] == pytest.approx(expected, rel=1e-15, abs=0)


@pytest.mark.parametrize("N", [1, 2, 5, 8])
def test_legt_closed_form_entry_by_entry(N):
    A, B = hippo(N, "legt")
    for n in range(N):
        assert B[n] == pytest.approx(np.sqrt(2 * n + 1), rel=1e-15)
        for k in range(N):
            sign = 1 if n >= k else (-1) ** (n - k)
            expected = -sign * np.sqrt((2 * n + 1) * (2 * k + 1))
            assert A[n, k] == pytest.approx(expected, rel=1e-15, abs=0)


def test_legs_ode_remembers_a_polynomial():
    # The HiPPO claim: c' = (A c + B u)/t keeps c(t) = projection of u on [0, t]. Integrate it
    # with scipy's RK in tau = log t (to avoid the 1/t singularity) from t0 = 1e-6, where
    # c = u(0) e_0 up to O(t0), to T = 40; a cubic (degree < N) is then reconstructed exactly.
    N, T, t0 = 6, 40.0, 1e-6
    A, B = (m.numpy() for m in hippo(N, "legs"))
    sol = solve_ivp(
        lambda tau, c: A @ c + B * poly(np.exp(tau)),
        (np.log(t0), np.log(T)),
        poly(0.0) * np.eye(N)[0],
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    c = sol.y[:, -1]
    # Tolerance 1e-6: the O(t0) start error decays and the solver tolerance is 1e-12.
    np.testing.assert_allclose(c, project(poly, 0.0, T, N), atol=1e-6)
    s = np.linspace(0, T, 50)
    x = torch.from_numpy(2 * s / T - 1)
    recon = (legendre_basis(N, x) @ torch.from_numpy(c)).numpy()
    np.testing.assert_allclose(recon, poly(s), atol=1e-6)


def test_legt_ode_remembers_a_polynomial_window():
    # LegT: c' = (A c + B u)/theta keeps the projection of u on [t - theta, t] when u is a
    # polynomial of degree < N (then u(t - theta) is exactly reconstructed from c).
    N, theta, T = 6, 5.0, 20.0
    A, B = (m.numpy() for m in hippo(N, "legt"))
    sol = solve_ivp(
        lambda t, c: (A @ c + B * poly(t)) / theta,
        (0.0, T),
        project(poly, -theta, 0.0, N),
        method="DOP853",
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(sol.y[:, -1], project(poly, T - theta, T, N), atol=1e-6)


def test_legs_online_coefficients_are_exact_for_step_inputs():
    # A piecewise-constant u (value u_j on (j-1, j]) has the exact projection on [0, k]:
    # c_n = sum_j u_j / 2 * int_{x_{j-1}}^{x_j} g_n(x) dx, x_j = 2j/k - 1 (numpy legint).
    N, L = 7, 40
    u = torch.randn(L, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    c = hippo_coefficients(u, N, "legs")
    assert c.shape == (L, N)
    for k in [1, 2, 3, 17, L]:
        x = 2 * np.arange(k + 1) / k - 1
        exact = np.zeros(N)
        for n in range(N):
            antider = npleg.legval(x, npleg.legint(np.eye(N)[n]))
            exact[n] = np.sqrt(2 * n + 1) / 2 * np.sum(u[:k].numpy() * np.diff(antider))
        # ZOH is exact here; round-off of k matrix exponentials: 1e-10.
        np.testing.assert_allclose(c[k - 1].numpy(), exact, atol=1e-10)


def test_legt_online_coefficients_match_ode_solver():
    N, L, theta = 5, 12, 4.0
    u = torch.randn(L, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c_online = hippo_coefficients(u, N, "legt", theta=theta)
    A, B = (m.numpy() for m in hippo(N, "legt"))
    c = np.zeros(N)
    for k in range(L):
        sol = solve_ivp(
            lambda t, c, k=k: (A @ c + B * float(u[k])) / theta,
            (0, 1),
            c,
            method="DOP853",
            rtol=1e-12,
            atol=1e-12,
        )
        c = sol.y[:, -1]
        np.testing.assert_allclose(c_online[k].numpy(), c, atol=1e-9)


@pytest.mark.parametrize("measure,theta", [("legs", None), ("legt", 100.0)])
def test_constant_input_long_sequence(measure, theta):
    # u = 1 is remembered as c = e_0 (g_0 = 1); L = 16384 steps stay finite.
    c = hippo_coefficients(torch.ones(16384), 8, measure, theta=theta)
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c[-1], torch.eye(8, dtype=torch.float64)[0], rtol=0, atol=1e-9)
    assert hippo_coefficients(torch.ones(1), 3, measure, theta=theta).shape == (1, 3)


def test_legendre_basis_and_reconstruct():
    N = 6
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    G = legendre_basis(N, x)
    for n in range(N):
        ref = np.sqrt(2 * n + 1) * npleg.legval(x.numpy(), np.eye(N)[n])
        np.testing.assert_allclose(G[:, n].numpy(), ref, atol=1e-13)
    xq, wq = npleg.leggauss(20)
    Gq = legendre_basis(N, torch.from_numpy(xq)).numpy()
    np.testing.assert_allclose(Gq.T @ (wq[:, None] / 2 * Gq), np.eye(N), atol=1e-13)
    c = torch.tensor([0.5, -1.0, 0.25, 0.0, 0.0, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(hippo_reconstruct(c, 11).numpy(), G.numpy() @ c.numpy())


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"N: expected a state size N >= 1, got 0"):
        hippo(0)
    with pytest.raises(TypeError, match=r"N: expected an int, got float"):
        hippo(4.0)
    with pytest.raises(ValueError, match=r"measure: expected one of .* got 'fourier'"):
        hippo(4, "fourier")
    with pytest.raises(ValueError, match=r"theta: LegT needs a window length"):
        hippo_coefficients(torch.ones(3), 4, "legt")
    with pytest.raises(ValueError, match=r"theta: LegS has no window"):
        hippo_coefficients(torch.ones(3), 4, "legs", theta=2.0)
    with pytest.raises(ValueError, match=r"u: expected a 1-D tensor"):
        hippo_coefficients(torch.ones(2, 3), 4)
    with pytest.raises(ValueError, match=r"c: expected a tensor of shape"):
        hippo_reconstruct([1.0, 2.0], 5)
    with pytest.raises(TypeError, match=r"x: expected a torch.Tensor"):
        legendre_basis(3, [0.0])

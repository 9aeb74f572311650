"""Chapter 2: HiPPO — remembering a signal's history in Legendre coefficients.

The state ``c(t)`` (shape ``(N,)``) holds the coefficients of the history of ``u`` in the
orthonormal Legendre basis ``g_n(x) = sqrt(2n+1) P_n(x)`` on ``x in [-1, 1]``, where ``x = 1``
is the present and ``x = -1`` the oldest remembered time:

* LegS (scaled measure, the whole history ``[0, t]``): ``c'(t) = (A c(t) + B u(t)) / t``,
  :eq:`hippo-legs-ode` with :eq:`hippo-legs`;
* LegT (translated measure, a sliding window ``[t - theta, t]``):
  ``c'(t) = (A c(t) + B u(t)) / theta``, :eq:`hippo-legt-ode` with :eq:`hippo-legt`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssm.discretize import discretize

__all__ = ["hippo", "legendre_basis", "hippo_coefficients", "hippo_reconstruct"]

MEASURES = ("legs", "legt")


def _check_N(N: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int):
        raise TypeError(f"N: expected an int, got {type(N).__name__}")
    if N < 1:
        raise ValueError(f"N: expected a state size N >= 1, got {N}")


def hippo_legs(N: int) -> tuple[Tensor, Tensor]:
    """HiPPO-LegS, eq. (hippo-legs): ``A_nk = -sqrt((2n+1)(2k+1))`` for ``n > k``,
    ``-(n+1)`` for ``n = k``, ``0`` for ``n < k``; ``B_n = sqrt(2n+1)``. float64."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    below = n[:, None] > n[None, :]
    A = torch.where(below, -r[:, None] * r[None, :], torch.zeros(N, N, dtype=torch.float64))
    return A - torch.diag(n + 1), r.clone()


def hippo_legt(N: int) -> tuple[Tensor, Tensor]:
    """HiPPO-LegT for a window of length 1, eq. (hippo-legt):
    ``A_nk = -sqrt((2n+1)(2k+1))`` for ``n >= k``, ``-(-1)^(n-k) sqrt((2n+1)(2k+1))`` for
    ``n < k``; ``B_n = sqrt(2n+1)``. float64."""
    n = torch.arange(N, dtype=torch.float64)
    r = torch.sqrt(2 * n + 1)
    sign = torch.where(n[:, None] >= n[None, :], 1.0, (-1.0) ** (n[:, None] - n[None, :]))
    return -sign * r[:, None] * r[None, :], r.clone()


def hippo(N: int, measure: str = "legs") -> tuple[Tensor, Tensor]:
    """The HiPPO matrices ``(A, B)``: ``A`` (N, N) and ``B`` (N,), float64.

    ``measure="legs"`` gives :eq:`hippo-legs` (use as ``c' = (A c + B u) / t``);
    ``measure="legt"`` gives :eq:`hippo-legt` (use as ``c' = (A c + B u) / theta`` for a
    window of length ``theta``).
    """
    _check_N(N)
    if measure not in MEASURES:
        raise ValueError(f"measure: expected one of {MEASURES}, got {measure!r}")
    return hippo_legs(N) if measure == "legs" else hippo_legt(N)


def legendre_basis(N: int, x: Tensor) -> Tensor:
    """The orthonormal Legendre basis ``g_n(x) = sqrt(2n+1) P_n(x)``, ``n = 0..N-1``.

    ``P_n`` by the three-term recurrence :eq:`hippo-legendre-recurrence`
    ``(n+1) P_{n+1} = (2n+1) x P_n - n P_{n-1}``. ``x``: any shape, values in ``[-1, 1]``.
    Returns shape ``x.shape + (N,)``; ``g_n`` is orthonormal for the measure ``dx / 2``.
    """
    _check_N(N)
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    P = [torch.ones_like(x), x]
    for n in range(1, N - 1):
        P.append(((2 * n + 1) * x * P[n] - n * P[n - 1]) / (n + 1))
    scale = torch.sqrt(2 * torch.arange(N, dtype=x.dtype, device=x.device) + 1)
    return torch.stack(P[:N], dim=-1) * scale


def hippo_coefficients(
    u: Tensor, N: int, measure: str = "legs", theta: float | None = None
) -> Tensor:
    """Run HiPPO online over ``u`` and return the coefficients after every step.

    ``u`` (L,) is held constant on each unit step ``(k-1, k]``, ``k = 1..L``, and each step is
    integrated exactly by zero-order hold (:eq:`zoh`):

    * LegS is time-invariant in ``tau = log t`` (:eq:`hippo-legs-log`), so step ``k >= 2`` is ZOH
      of ``(A, B)`` with ``dt = log(k / (k-1))``; the first step gives ``c_1 = u_1 e_0``.
    * LegT is ZOH of ``(A / theta, B / theta)`` with ``dt = 1``; ``theta`` (in steps) is required.

    Returns ``c`` of shape ``(L, N)``, float64: ``c[k-1]`` remembers ``u_1..u_k``.
    """
    _check_N(N)
    if not isinstance(u, Tensor) or u.dim() != 1:
        raise ValueError(f"u: expected a 1-D tensor (L,), got {getattr(u, 'shape', type(u))}")
    if measure not in MEASURES:
        raise ValueError(f"measure: expected one of {MEASURES}, got {measure!r}")
    if measure == "legt" and (theta is None or theta <= 0):
        raise ValueError(f"theta: LegT needs a window length theta > 0 (in steps), got {theta}")
    if measure == "legs" and theta is not None:
        raise ValueError(f"theta: LegS has no window, expected None, got {theta}")
    A, B = hippo(N, measure)
    u = u.to(torch.float64)
    if measure == "legs":
        k = torch.arange(2, u.shape[0] + 1, dtype=torch.float64)
        A_bar, B_bar = discretize(A, B, torch.log(k / (k - 1)), "zoh")
        c = u[0] * torch.eye(N, dtype=torch.float64)[0]
    else:
        A_step, B_step = discretize(A / theta, B / theta, 1.0, "zoh")
        A_bar, B_bar = A_step.expand(u.shape[0] - 1, N, N), B_step.expand(u.shape[0] - 1, N)
        c = B_step * u[0]
    out = [c]
    for A_k, B_k, u_k in zip(A_bar, B_bar, u[1:], strict=True):
        c = A_k @ c + B_k * u_k
        out.append(c)
    return torch.stack(out)


def hippo_reconstruct(c: Tensor, num_points: int) -> Tensor:
    """Evaluate the remembered history ``sum_n c_n g_n(x)`` on ``num_points`` points.

    The points are ``x = -1 .. 1`` evenly spaced: oldest remembered time first, present last
    (LegS: ``s = t (x+1)/2``; LegT: ``s = t - theta (1-x)/2``). ``c``: ``(..., N)``.
    Returns ``(..., num_points)``, the dtype of ``c``. Implements :eq:`hippo-reconstruct`.
    """
    if not isinstance(c, Tensor) or c.dim() < 1:
        raise ValueError(f"c: expected a tensor of shape (..., N), got {type(c).__name__}")
    x = torch.linspace(-1, 1, num_points, dtype=c.dtype, device=c.device)
    return c @ legendre_basis(c.shape[-1], x).T

"""Chapter 3: S4 — the HiPPO matrix in DPLR form and its kernel by Cauchy + Woodbury.

Glossary of shapes: ``N`` state size (even), ``L`` kernel length, ``...`` leading (channel)
dimensions such as ``H``. Every tensor in the DPLR basis is complex.

* :eq:`s4-nplr`: ``A = S - P P^T`` with ``S = -1/2 I + skew-symmetric`` for HiPPO-LegS;
* :eq:`s4-dplr`: ``A = V (diag(Lambda) - P~ P~^*) V^*`` after diagonalising ``S`` stably;
* :eq:`s4-dplr-bilinear`: the bilinear discretization of a DPLR matrix, by Woodbury;
* :eq:`s4-c-tilde`: the truncated generating function needs ``C~ = C (I - A_bar^L)``;
* :eq:`s4-resolvent` + :eq:`s4-woodbury`: the generating function at the roots of unity is a
  combination of four sums with the Cauchy matrix :eq:`s4-cauchy`, and an inverse FFT gives ``K``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssm.discretize import step_size
from ssm.hippo import hippo

__all__ = [
    "nplr_legs",
    "dplr",
    "dplr_matrix",
    "dplr_bilinear",
    "c_tilde",
    "roots_of_unity",
    "cauchy_matrix",
    "generating_function",
    "s4_kernel",
]


def _check_even_N(N: int) -> None:
    if isinstance(N, bool) or not isinstance(N, int):
        raise TypeError(f"N: expected an int, got {type(N).__name__}")
    if N < 2 or N % 2:
        raise ValueError(
            f"N: expected an even state size N >= 2 (eigenvalues come in N/2 conjugate pairs), "
            f"got {N}"
        )


def nplr_legs(N: int) -> tuple[Tensor, Tensor, Tensor]:
    """Normal plus low rank form of HiPPO-LegS, eq. (s4-nplr): ``A = S - P P^T``.

    ``P_n = sqrt(n + 1/2)``; then ``S = A + P P^T`` is ``-1/2`` on the diagonal plus a
    skew-symmetric matrix, i.e. normal.

    Returns:
        ``(S, P, B)``: ``S`` (N, N), ``P`` (N,), ``B`` (N,), float64.
    """
    A, B = hippo(N, "legs")
    P = torch.sqrt(torch.arange(N, dtype=torch.float64) + 0.5)
    return A + P[:, None] * P[None, :], P, B


def dplr(N: int, measure: str = "legs") -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """HiPPO in diagonal plus low rank form, eq. (s4-dplr): ``A = V (diag(Lambda) - P P^*) V^*``.

    ``S = -1/2 I + S_skew`` is diagonalised through the Hermitian matrix ``-i S_skew`` (a stable,
    unitary eigendecomposition): ``Lambda = -1/2 + i mu``. Eigenvalues are ordered as
    ``N/2`` with positive imaginary part followed by their conjugates, with conjugate
    eigenvectors, so ``Lambda[N//2:] == Lambda[:N//2].conj()`` and likewise for ``P`` and ``B``.

    Args:
        N: even state size.
        measure: only ``"legs"`` (the measure S4 uses).

    Returns:
        ``(Lambda, P, B, V)``, complex128: ``Lambda``, ``P = V^* P_real``, ``B = V^* B_real``
        (N,) and the unitary ``V`` (N, N).
    """
    _check_even_N(N)
    if measure != "legs":
        raise ValueError(
            f"measure: expected 'legs' (the NPLR form is derived for LegS), got {measure!r}"
        )
    S, P, B = nplr_legs(N)
    diagonal = S.diagonal().mean()
    skew = S - diagonal * torch.eye(N, dtype=torch.float64)
    mu, V = torch.linalg.eigh(-1j * skew.to(torch.complex128))
    V_half = V[:, N // 2 :]
    V = torch.cat([V_half, V_half.conj()], dim=1)
    Lambda_half = diagonal + 1j * mu[N // 2 :]
    Lambda = torch.cat([Lambda_half, Lambda_half.conj()])
    V_star = V.conj().T
    return Lambda, V_star @ P.to(torch.complex128), V_star @ B.to(torch.complex128), V


def dplr_matrix(Lambda: Tensor, P: Tensor) -> Tensor:
    """The dense matrix ``diag(Lambda) - P P^*`` (..., N, N) of a DPLR state matrix (s4-dplr)."""
    return torch.diag_embed(Lambda) - P[..., :, None] * P.conj()[..., None, :]


def _as_dt(dt: Tensor | float, like: Tensor) -> Tensor:
    """``dt`` checked by :func:`ssm.discretize.step_size`, in ``like``'s real dtype and device."""
    return step_size(dt, like).to(dtype=like.real.dtype, device=like.device)


def _check_dplr(Lambda: Tensor, P: Tensor, B: Tensor, C: Tensor | None = None) -> None:
    named = {"Lambda": Lambda, "P": P, "B": B} | ({} if C is None else {"C": C})
    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if not value.is_complex():
            raise TypeError(f"{name}: expected a complex tensor, got dtype {value.dtype}")
    if Lambda.dim() < 1:
        raise ValueError(f"Lambda: expected shape (..., N), got {tuple(Lambda.shape)}")
    for name, value in named.items():
        if value.shape != Lambda.shape:
            raise ValueError(
                f"{name}: expected the shape of Lambda {tuple(Lambda.shape)}, "
                f"got {tuple(value.shape)}"
            )


def dplr_bilinear(Lambda: Tensor, P: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear discretization of ``A = diag(Lambda) - P P^*``, eq. (s4-dplr-bilinear).

    With ``A1 = (2/dt I - A)^{-1} = R - R P P^* R / (1 + P^* R P)`` and
    ``R = diag(1 / (2/dt - Lambda))`` (Woodbury: no matrix is inverted),
    ``A_bar = A1 (2/dt I + A) = 4/dt A1 - I`` and ``B_bar = 2 A1 B``: ``O(N^2)``, no matrix
    product either.

    Args:
        Lambda, P, B: (..., N) complex.
        dt: positive, broadcastable to the leading dimensions.

    Returns:
        dense ``A_bar`` (..., N, N) and ``B_bar`` (..., N), complex.
    """
    _check_dplr(Lambda, P, B)
    dt = _as_dt(dt, Lambda)[..., None]
    R = 1 / (2 / dt - Lambda)
    RP = R * P
    denominator = 1 + (P.conj() * RP).sum(-1)
    A1 = (
        torch.diag_embed(R)
        - RP[..., :, None] * (R * P.conj())[..., None, :] / denominator[..., None, None]
    )
    eye = torch.eye(Lambda.shape[-1], dtype=Lambda.dtype, device=Lambda.device)
    return 4 / dt[..., None] * A1 - eye, 2 * (A1 @ B[..., None])[..., 0]


def c_tilde(C: Tensor, A_bar: Tensor, L: int) -> Tensor:
    """The corrected output vector ``C~ = C (I - A_bar^L)``, eq. (s4-c-tilde).

    Args:
        C: (..., N) complex row vector.
        A_bar: (..., N, N).
        L: kernel length.

    Returns:
        ``C~`` (..., N).
    """
    return C - (C[..., None, :] @ torch.linalg.matrix_power(A_bar, L))[..., 0, :]


def roots_of_unity(L: int, dtype: torch.dtype = torch.complex128) -> Tensor:
    """The ``L`` nodes ``omega_k = exp(-2 pi i k / L)``, ``k = 0..L-1`` (the DFT's), shape (L,)."""
    k = torch.arange(L, dtype=torch.float64)
    return torch.exp(-2j * math.pi * k / L).to(dtype)


def cauchy_matrix(omega: Tensor, Lambda: Tensor, dt: Tensor) -> Tensor:
    """The Cauchy matrix ``R_nk = 1 / ((1 - omega_k) - dt/2 (1 + omega_k) Lambda_n)`` (s4-cauchy).

    ``R_nk = 2 / (dt (1 + omega_k)) * 1 / (g_k - Lambda_n)`` with
    ``g_k = 2/dt (1 - omega_k)/(1 + omega_k)``: a Cauchy matrix ``1 / (g_k - Lambda_n)`` with
    scaled columns, written without the pole at ``omega = -1``. Materialised naively:
    ``O(N L)`` time and memory.

    Args:
        omega: (L,) nodes.
        Lambda: (..., N).
        dt: (...) or a scalar tensor.

    Returns:
        ``R`` (..., N, L) complex.
    """
    dt = dt[..., None, None]
    return 1 / ((1 - omega) - dt / 2 * (1 + omega) * Lambda[..., :, None])


def generating_function(
    Lambda: Tensor, P: Tensor, B: Tensor, C_tilde: Tensor, dt: Tensor, omega: Tensor
) -> Tensor:
    """The truncated generating function ``K^(omega) = sum_l K_l omega^l`` at ``omega^L = 1``.

    Eq. (s4-resolvent) with Woodbury (s4-woodbury): for ``A = diag(Lambda) - P P^*``,
    ``K^ = dt [k_CB - s k_CP k_PB / (1 + s k_PP)]`` with ``s = dt/2 (1 + omega)`` and the four
    Cauchy sums ``k_ab = sum_n a_n b_n R_n`` of :func:`cauchy_matrix` (``a`` in
    ``(C~, P^*)``, ``b`` in ``(B, P)``), computed as one matrix product.

    Args:
        Lambda, P, B, C_tilde: (..., N) complex.
        dt: (...) positive.
        omega: (L,) roots of unity.

    Returns:
        ``K^`` (..., L) complex.
    """
    R = cauchy_matrix(omega, Lambda, dt)
    v = torch.stack([C_tilde * B, C_tilde * P, P.conj() * B, P.conj() * P], dim=-2)
    k_CB, k_CP, k_PB, k_PP = (v @ R).unbind(-2)
    s = dt[..., None] / 2 * (1 + omega)
    return dt[..., None] * (k_CB - s * k_CP * k_PB / (1 + s * k_PP))


def s4_kernel(
    Lambda: Tensor,
    P: Tensor,
    B: Tensor,
    C: Tensor,
    dt: Tensor | float,
    L: int,
    *,
    pairs: bool = False,
) -> Tensor:
    """The S4 convolution kernel of a DPLR system, bilinear discretization, eq. (s4-kernel).

    Steps: ``A_bar`` by :eq:`s4-dplr-bilinear` (only to form ``C~``, :eq:`s4-c-tilde`); the
    generating function at the ``L`` roots of unity by Cauchy sums and Woodbury
    (:eq:`s4-woodbury`); an inverse FFT. Differentiable in every argument.

    Args:
        Lambda: (..., N) complex eigenvalues of the normal part (real parts < 0 for stability).
        P: (..., N) complex low-rank vector, ``A = diag(Lambda) - P P^*``.
        B: (..., N) complex.
        C: (..., N) complex, the ``C`` of the DPLR basis (not ``C~``).
        dt: positive step size, a float or a real tensor of the leading shape (e.g. (H,)).
        L: kernel length >= 1.
        pairs: declare that the modes come in conjugate pairs (as those of :func:`dplr`), so
            that ``K`` is real and its DFT Hermitian: only the ``L//2 + 1`` frequencies
            ``omega_0..omega_{L//2}`` are evaluated and ``irfft`` returns ``K`` (half the work).

    Returns:
        ``K`` (..., L), the real part of ``K_l = C A_bar^l B_bar`` (exactly real when the modes
        come in conjugate pairs, as those of :func:`dplr` do), real dtype of ``Lambda``.
    """
    _check_dplr(Lambda, P, B, C)
    if isinstance(L, bool) or not isinstance(L, int):
        raise TypeError(f"L: expected an int, got {type(L).__name__}")
    if L < 1:
        raise ValueError(f"L: expected a length L >= 1, got {L}")
    dt = _as_dt(dt, Lambda).expand(Lambda.shape[:-1])
    A_bar, _ = dplr_bilinear(Lambda, P, B, dt)
    omega = roots_of_unity(L, Lambda.dtype).to(Lambda.device)
    if pairs:
        omega = omega[: L // 2 + 1]
    K_hat = generating_function(Lambda, P, B, c_tilde(C, A_bar, L), dt, omega)
    return torch.fft.irfft(K_hat, n=L) if pairs else torch.fft.ifft(K_hat, n=L).real

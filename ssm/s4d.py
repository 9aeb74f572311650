"""Chapter 4: diagonal state spaces — S4D and DSS.

Glossary of shapes: ``H`` channels, ``N`` state size, ``N/2`` conjugate-pair modes (only one
of each pair is stored), ``L`` kernel length. A real system with ``N`` states whose diagonal
``A`` has conjugate pairs has the kernel ``K_l = 2 Re sum_{n < N/2} C_n B_bar_n A_bar_n^l``.

* :eq:`s4d-vandermonde`: the S4D kernel is a Vandermonde matrix-vector product;
* :eq:`s4d-legs`, :eq:`s4d-inv`, :eq:`s4d-lin`: the S4D-LegS, S4D-Inv and S4D-Lin inits;
* :eq:`s4d-dss`: the DSS-exp kernel, a row-softmax over positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssm.discretize import discretize, step_size
from ssm.s4 import _check_even_N, dplr

__all__ = ["s4d_init", "vandermonde", "s4d_kernel", "dss_softmax", "dss_kernel"]

KINDS = ("legs", "inv", "lin")


def s4d_init(N: int, kind: str = "lin") -> Tensor:
    """Diagonal initialisations of S4D: ``N/2`` eigenvalues with positive imaginary part.

    * ``"legs"``, eq. (s4d-legs): the diagonal ``Lambda`` of DPLR-HiPPO-LegS (:func:`ssm.s4.dplr`);
    * ``"inv"``, eq. (s4d-inv): ``A_n = -1/2 + i N/pi (N/(2n+1) - 1)``;
    * ``"lin"``, eq. (s4d-lin): ``A_n = -1/2 + i pi n``.

    Args:
        N: even state size.
        kind: ``"legs"``, ``"inv"`` or ``"lin"``.

    Returns:
        ``A`` (N/2,) complex128, ``n = 0..N/2-1``.
    """
    _check_even_N(N)
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if kind == "legs":
        return dplr(N)[0][: N // 2]
    n = torch.arange(N // 2, dtype=torch.float64)
    imag = N / math.pi * (N / (2 * n + 1) - 1) if kind == "inv" else math.pi * n
    return torch.complex(torch.full_like(n, -0.5), imag)


def vandermonde(v: Tensor, z: Tensor, L: int) -> Tensor:
    """Vandermonde product ``sum_n v_n z_n^l`` for ``l = 0..L-1``, eq. (s4d-vandermonde).

    ``z_n^l = exp(l log z_n)`` (any branch of the log gives the same integer powers); the
    ``(..., N/2, L)`` matrix is materialised: ``O(N L)``.

    Args:
        v, z: (..., N/2) complex.
        L: length.

    Returns:
        (..., L) complex.
    """
    powers = torch.exp(torch.log(z)[..., None] * torch.arange(L, device=z.device))
    return torch.einsum("...n,...nl->...l", v, powers)


def _check_modes(**named: Tensor) -> None:
    """Every named tensor is a complex (..., N/2) tensor of the same shape."""
    first_name, first = next(iter(named.items()))
    for name, value in named.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if not value.is_complex():
            raise TypeError(f"{name}: expected a complex tensor, got dtype {value.dtype}")
        if value.dim() not in (1, 2) or value.shape != first.shape:
            raise ValueError(
                f"{name}: expected shape (H, N/2) or (N/2,) equal to {first_name} "
                f"{tuple(first.shape)}, got {tuple(value.shape)}"
            )


def _check_length(L: int) -> None:
    if isinstance(L, bool) or not isinstance(L, int):
        raise TypeError(f"L: expected an int, got {type(L).__name__}")
    if L < 1:
        raise ValueError(f"L: expected a length L >= 1, got {L}")


def _check_dt(dt: Tensor | float, A: Tensor) -> Tensor:
    """``dt`` as a real tensor of shape ``A.shape[:-1]`` (a scalar broadcasts), all positive."""
    dt = step_size(dt, A).to(dtype=A.real.dtype, device=A.device)
    if dt.dim() > 0 and dt.shape != A.shape[:-1]:
        raise ValueError(
            f"dt: expected a scalar or shape {tuple(A.shape[:-1])}, got {tuple(dt.shape)}"
        )
    return dt.expand(A.shape[:-1])


def s4d_kernel(
    A: Tensor, B: Tensor, C: Tensor, dt: Tensor | float, L: int, method: str = "zoh"
) -> Tensor:
    """The S4D kernel ``K_l = 2 Re sum_n C_n B_bar_n A_bar_n^l``, eq. (s4d-kernel).

    Each mode is discretized with :func:`ssm.discretize.discretize` (``"zoh"`` :eq:`zoh` or
    ``"bilinear"`` :eq:`bilinear`), then :func:`vandermonde` sums the modes.

    Args:
        A, B, C: (H, N/2) or (N/2,) complex, one mode of each conjugate pair.
        dt: positive, a float or a real tensor of shape (H,).
        L: kernel length >= 1.
        method: ``"zoh"`` or ``"bilinear"``.

    Returns:
        ``K`` (H, L) or (L,), real.
    """
    _check_modes(A=A, B=B, C=C)
    _check_length(L)
    if method not in ("zoh", "bilinear"):
        raise ValueError(f"method: expected 'zoh' or 'bilinear', got {method!r}")
    A_bar, B_bar = discretize(A, B, _check_dt(dt, A), method)
    return 2 * vandermonde(C * B_bar, A_bar, L).real


def dss_softmax(x: Tensor) -> Tensor:
    """Softmax over the last dimension of a complex tensor, ``exp(x_l) / sum_r exp(x_r)``.

    The exponent is shifted by the entry of largest real part (softmax is invariant to any
    complex shift), so no exponential overflows. (..., L) -> (..., L).
    """
    shift = x.gather(-1, x.real.argmax(-1, keepdim=True))
    e = torch.exp(x - shift)
    return e / e.sum(-1, keepdim=True)


def dss_kernel(Lambda: Tensor, W: Tensor, dt: Tensor | float, L: int) -> Tensor:
    """The DSS-exp kernel ``K = 2 Re[(W / Lambda) row-softmax(dt Lambda l)]``, eq. (s4d-dss).

    ``K_l = 2 Re sum_n W_n / Lambda_n exp(l dt Lambda_n) / sum_{r<L} exp(r dt Lambda_n)``: the
    ZOH kernel of a diagonal SSM whose ``C_n B_n`` is ``W_n / (exp(L dt Lambda_n) - 1)``,
    normalised over the ``L`` positions so that it stays bounded for any real part.

    Args:
        Lambda, W: (H, N/2) or (N/2,) complex.
        dt: positive float or (H,).
        L: length >= 1.

    Returns:
        ``K`` (H, L) or (L,), real.
    """
    _check_modes(Lambda=Lambda, W=W)
    _check_length(L)
    dt = _check_dt(dt, Lambda)
    positions = dt[..., None, None] * Lambda[..., :, None] * torch.arange(L, device=W.device)
    return 2 * torch.einsum("...n,...nl->...l", W / Lambda, dss_softmax(positions)).real

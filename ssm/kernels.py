"""Chapter 1: the convolution kernel of a discrete state space model, computed naively.

Unrolling ``h_k = A_bar h_{k-1} + B_bar u_k``, ``y_k = C h_k`` from ``h_{-1} = 0`` gives
``y = K * u`` with ``K_l = C A_bar^l B_bar`` (:eq:`ssm-kernel`). This module computes ``K`` by
``L`` repeated multiplications; it is slow (``O(L N^2)``) on purpose: it is the reference
that the fast kernels of chapters 3 and 4 are tested against.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ssm_kernel"]


def _check(A_bar: Tensor, B_bar: Tensor, C: Tensor, L: int) -> None:
    """Validate the arguments of :func:`ssm_kernel`."""
    for name, value in (("A_bar", A_bar), ("B_bar", B_bar), ("C", C)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if isinstance(L, bool) or not isinstance(L, int):
        raise TypeError(f"L: expected an int, got {type(L).__name__}")
    if L < 1:
        raise ValueError(f"L: expected a length L >= 1, got {L}")
    if B_bar.dim() < 1 or C.dim() < 1 or C.shape[-1] != B_bar.shape[-1]:
        raise ValueError(
            f"C: expected shape (..., N) matching B_bar {tuple(B_bar.shape)}, got {tuple(C.shape)}"
        )
    N = B_bar.shape[-1]
    dense = A_bar.dim() == B_bar.dim() + 1 and A_bar.shape[-2:] == (N, N)
    diagonal = A_bar.dim() == B_bar.dim() and A_bar.shape[-1] == N
    if not (dense or diagonal):
        raise ValueError(
            f"A_bar: expected a dense (..., N, N) or diagonal (..., N) matrix with N = {N} "
            f"(from B_bar {tuple(B_bar.shape)}), got shape {tuple(A_bar.shape)}"
        )


def ssm_kernel(A_bar: Tensor, B_bar: Tensor, C: Tensor, L: int) -> Tensor:
    """The SSM convolution kernel ``K_l = C A_bar^l B_bar`` for ``l = 0..L-1``, eq. (ssm-kernel).

    Computed by repeated multiplication: ``x_0 = B_bar``, ``x_{l+1} = A_bar x_l``,
    ``K_l = C x_l``.

    Args:
        A_bar: dense ``(..., N, N)`` or diagonal ``(..., N)`` (diagonal when it has as many
            dimensions as ``B_bar``), real or complex.
        B_bar: ``(..., N)``.
        C: ``(..., N)``.
        L: kernel length, ``L >= 1``.

    Returns:
        ``K`` of shape ``(..., L)`` (the broadcast leading dimensions), in the common dtype; a
        complex system gives a complex kernel (take ``.real`` yourself if it is meant to be real).
    """
    _check(A_bar, B_bar, C, L)
    diagonal = A_bar.dim() == B_bar.dim()
    x, K = B_bar, []
    for _ in range(L):
        K.append((C * x).sum(-1))
        x = A_bar * x if diagonal else (A_bar @ x[..., None])[..., 0]
    return torch.stack(K, dim=-1)

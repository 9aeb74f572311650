"""Chapter 1: causal convolution with the FFT in ``O(L log L)``.

``y_k = sum_{l=0}^{k} K_l u_{k-l}`` (:eq:`causal-conv`) for ``k = 0..L-1``. The FFT computes a
*circular* convolution; padding both sequences with zeros to length ``2L`` makes the
wrap-around terms multiply zeros, so the first ``L`` outputs are the causal ones
(:eq:`fft-conv`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["causal_conv"]


def causal_conv(u: Tensor, K: Tensor) -> Tensor:
    """Causal convolution ``y = K * u`` along the last dimension by FFT, eq. (fft-conv).

    Args:
        u: input ``(..., L)``, real or complex.
        K: kernel ``(..., L)``, the same length ``L``; leading dimensions broadcast with ``u``
            (e.g. ``u`` of shape ``(batch, H, L)`` and ``K`` of shape ``(H, L)``).

    Returns:
        ``y`` of shape ``(..., L)`` with the broadcast leading dimensions, real when ``u`` and
        ``K`` are real and complex otherwise, ``y_k = sum_{l<=k} K_l u_{k-l}``.
    """
    for name, value in (("u", u), ("K", K)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
        if value.dim() < 1:
            raise ValueError(f"{name}: expected shape (..., L), got a scalar")
    L = u.shape[-1]
    if K.shape[-1] != L:
        raise ValueError(
            f"K: expected the length L = {L} of u {tuple(u.shape)}, got shape {tuple(K.shape)}"
        )
    try:
        torch.broadcast_shapes(u.shape[:-1], K.shape[:-1])
    except RuntimeError as error:
        raise ValueError(
            f"K: leading dimensions {tuple(K.shape[:-1])} do not broadcast with those of u "
            f"{tuple(u.shape[:-1])}"
        ) from error
    n = 2 * L
    if u.is_complex() or K.is_complex():
        y = torch.fft.ifft(torch.fft.fft(u, n=n) * torch.fft.fft(K, n=n), n=n)
    else:
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)
    return y[..., :L]

"""Chapter 1: from a continuous state space model to a discrete recurrence.

The continuous system ``x'(t) = A x(t) + B u(t)`` becomes ``h_k = A_bar h_{k-1} + B_bar u_k``
for a step size ``dt``. Three rules are implemented, each derived in chapter 1:
forward Euler :eq:`euler`, bilinear (Tustin) :eq:`bilinear` and zero-order hold :eq:`zoh`.

Shapes: ``N`` is the state size. ``A`` is *dense* with shape ``(..., N, N)`` or *diagonal*
with shape ``(..., N)`` — it is read as diagonal when it has as many dimensions as ``B``
(``(..., N)``). ``dt`` is a positive scalar or a tensor of leading (channel) dimensions such
as ``(H,)``; leading dimensions of ``A``, ``B`` and ``dt`` broadcast, so a dt of shape ``(H,)``
gives ``H`` discretized systems.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["discretize", "euler", "bilinear", "zoh"]

METHODS = ("zoh", "bilinear", "euler")


def euler(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Forward Euler, eq. (euler): ``A_bar = I + dt A``, ``B_bar = dt B``.

    Args:
        A: dense ``(..., N, N)`` or diagonal ``(..., N)`` state matrix.
        B: ``(..., N)`` input matrix.
        dt: step size, broadcastable to the leading dimensions (already validated).
    """
    if A.dim() == B.dim():
        return 1 + dt[..., None] * A, dt[..., None] * B
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return eye + dt[..., None, None] * A, dt[..., None] * B


def bilinear(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear (Tustin), eq. (bilinear).

    ``A_bar = (I - dt/2 A)^{-1} (I + dt/2 A)`` and ``B_bar = (I - dt/2 A)^{-1} dt B``.
    Shapes as in :func:`euler`.
    """
    if A.dim() == B.dim():
        half = dt[..., None] / 2 * A
        return (1 + half) / (1 - half), dt[..., None] * B / (1 - half)
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    half = dt[..., None, None] / 2 * A
    left = eye - half
    A_bar = torch.linalg.solve(left, eye + half)
    B_bar = torch.linalg.solve(left, (dt[..., None] * B)[..., None])[..., 0]
    return A_bar, B_bar


def zoh(A: Tensor, B: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Zero-order hold, eq. (zoh): ``A_bar = exp(dt A)``, ``B_bar = int_0^dt exp(s A) ds B``.

    When ``A`` is invertible the integral is ``A^{-1} (exp(dt A) - I) B``. For a diagonal ``A``
    it is computed as ``expm1(dt a) / (dt a) * dt b``, which stays exact as ``a -> 0``. For a
    dense ``A`` it is read off one matrix exponential of the block matrix
    ``[[A, B], [0, 0]] dt`` (Van Loan's trick), which needs no inverse. Shapes as in :func:`euler`.
    """
    if A.dim() == B.dim():
        z = dt[..., None] * A
        z_safe = torch.where(z == 0, torch.ones_like(z), z)
        phi1 = torch.where(z == 0, torch.ones_like(z), torch.expm1(z_safe) / z_safe)
        return torch.exp(z), phi1 * dt[..., None] * B
    N = A.shape[-1]
    batch = torch.broadcast_shapes(A.shape[:-2], B.shape[:-1], dt.shape)
    block = torch.zeros(*batch, N + 1, N + 1, dtype=A.dtype, device=A.device)
    block[..., :N, :N] = A
    block[..., :N, N] = B
    expm = torch.linalg.matrix_exp(dt[..., None, None] * block)
    return expm[..., :N, :N], expm[..., :N, N]


def step_size(dt: Tensor | float, like: Tensor) -> Tensor:
    """The step size ``dt`` (the Delta of :eq:`zoh`) as a real tensor, checked positive.

    A Python number becomes a scalar tensor of ``like``'s real dtype on ``like``'s device; a
    tensor keeps its dtype, shape and autograd history. Chapters 3 and 4 validate ``dt`` here too.
    """
    if isinstance(dt, bool) or not isinstance(dt, Tensor | float | int):
        raise TypeError(f"dt: expected a float or a real torch.Tensor, got {type(dt).__name__}")
    if not isinstance(dt, Tensor):
        dt = torch.tensor(float(dt), dtype=like.real.dtype, device=like.device)
    if dt.is_complex():
        raise TypeError(f"dt: expected a real step size, got dtype {dt.dtype}")
    if not bool((dt > 0).all()):
        raise ValueError(f"dt: expected positive step sizes, got min {dt.min().item():.4g}")
    return dt


def _check(A: Tensor, B: Tensor, dt: Tensor | float) -> Tensor:
    """Validate the arguments of :func:`discretize`; return ``dt`` as a tensor."""
    for name, value in (("A", A), ("B", B)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    dt = step_size(dt, A)
    if B.dim() < 1:
        raise ValueError(f"B: expected shape (..., N), got a scalar of shape {tuple(B.shape)}")
    N = B.shape[-1]
    if A.dim() == B.dim() + 1:
        if A.shape[-2:] != (N, N):
            raise ValueError(
                f"A: expected a square (..., N, N) matrix with N = {N} (from B of shape "
                f"{tuple(B.shape)}), got shape {tuple(A.shape)}"
            )
    elif A.dim() == B.dim():
        if A.shape[-1] != N:
            raise ValueError(
                f"A: a diagonal A must have shape (..., N) with N = {N} like B "
                f"{tuple(B.shape)}, got shape {tuple(A.shape)}"
            )
    else:
        raise ValueError(
            f"A: expected a dense (..., N, N) or diagonal (..., N) matrix for B of shape "
            f"{tuple(B.shape)}, got shape {tuple(A.shape)}"
        )
    return dt


def discretize(
    A: Tensor, B: Tensor, dt: Tensor | float, method: str = "zoh"
) -> tuple[Tensor, Tensor]:
    """Discretize ``x' = A x + B u`` with step ``dt``: returns ``(A_bar, B_bar)``.

    Implements :eq:`zoh` (``method="zoh"``), :eq:`bilinear` and :eq:`euler`.

    Args:
        A: dense ``(..., N, N)`` or diagonal ``(..., N)`` (diagonal when ``A.dim() == B.dim()``),
            real or complex.
        B: ``(..., N)``, real or complex.
        dt: positive step size, a float or a real tensor of leading (channel) dimensions,
            e.g. ``(H,)``.
        method: ``"zoh"``, ``"bilinear"`` or ``"euler"``.

    Returns:
        ``A_bar`` with the shape of ``A`` and ``B_bar`` with the shape of ``B``, both extended
        by the broadcast leading dimensions of ``A``, ``B`` and ``dt``, in their common dtype.
    """
    dt = _check(A, B, dt)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    dtype = torch.promote_types(torch.promote_types(A.dtype, B.dtype), dt.dtype)
    A, B, dt = A.to(dtype), B.to(dtype), dt.to(dtype)
    return {"zoh": zoh, "bilinear": bilinear, "euler": euler}[method](A, B, dt)

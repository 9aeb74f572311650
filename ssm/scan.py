"""Linear recurrences as scans: the sequential reference and parallel scans (chapter 6).

Shape letters (as in Mamba): ``batch``, ``D`` channels, ``L`` time steps, ``N`` state size.

The linear recurrence {eq}`scan-recurrence` is :math:`h_t = a_t h_{t-1} + b_t` with
:math:`h_{-1} = 0`, along the last dimension of ``a`` and ``b``. The selective scan of
S6/Mamba {eq}`scan-selective` runs that recurrence with :math:`a = \\exp(\\Delta A)` and
:math:`b = \\Delta B u` per channel and state coordinate, and reads out :math:`y = C h + D u`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["linear_scan", "selective_scan", "scan_sequential", "selective_scan_sequential"]

LINEAR_METHODS = ("sequential", "hillis_steele", "blelloch", "chunked", "triton", "auto")
SELECTIVE_METHODS = ("sequential", "hillis_steele", "blelloch", "chunked", "triton", "auto")


# ----------------------------------------------------------------------------- checks
def _check_tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name}: expected a floating point or complex dtype, got {x.dtype}")
    return x


def _check_method(method: object, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise ValueError(f"method: expected one of {allowed}, got {method!r}")
    return method


def _check_linear_inputs(a: torch.Tensor, b: torch.Tensor) -> None:
    _check_tensor("a", a)
    _check_tensor("b", b)
    if a.shape != b.shape:
        raise ValueError(
            f"a, b: expected the same shape (..., L), got a {tuple(a.shape)} and b {tuple(b.shape)}"
        )
    if a.dim() == 0 or a.shape[-1] == 0:
        raise ValueError(f"a: expected shape (..., L) with L >= 1, got {tuple(a.shape)}")
    if a.dtype != b.dtype:
        raise TypeError(f"a, b: expected the same dtype, got a {a.dtype} and b {b.dtype}")


# ------------------------------------------------------------------ the linear recurrence
def scan_sequential(
    a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
) -> torch.Tensor:
    """The reference loop for {eq}`scan-recurrence`: :math:`h_t = a_t h_{t-1} + b_t`.

    Iterates over ``unbind(-1)`` and stacks once, so that autograd's backward stays linear
    in ``L`` (indexing ``h[..., t]`` in the loop would make it quadratic).

    Args:
        a, b: ``(..., L)``, same shape and dtype, real or complex.
        h0: optional initial state ``(...)``; zero when ``None``.

    Returns:
        h: ``(..., L)``, the states :math:`h_0, \\dots, h_{L-1}`.
    """
    h = torch.zeros_like(b[..., 0]) if h0 is None else h0
    hs = []
    for a_t, b_t in zip(a.unbind(-1), b.unbind(-1), strict=True):
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=-1)


def linear_scan(a: torch.Tensor, b: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Solve :math:`h_t = a_t h_{t-1} + b_t`, :math:`h_{-1} = 0`, along the last dim.

    Implements {eq}`scan-recurrence` with the scan of {eq}`scan-operator`.

    Args:
        a, b: ``(..., L)``, same shape, float32/float64/complex64/complex128.
        method: ``"sequential"`` (the reference loop), ``"hillis_steele"``, ``"blelloch"``,
            ``"chunked"`` or ``"auto"``.

    Returns:
        h: ``(..., L)``, same dtype as ``a``.
    """
    _check_linear_inputs(a, b)
    method = _check_method(method, LINEAR_METHODS)
    if method == "triton":
        raise ValueError(
            "method: 'triton' is provided for selective_scan only; use 'sequential', "
            "'hillis_steele', 'blelloch', 'chunked' or 'auto' for linear_scan"
        )
    return scan_sequential(a, b)


# -------------------------------------------------------------------- the selective scan
def _check_selective_inputs(u, delta, A, B, C, D, z, delta_bias) -> None:
    for name, x in (("u", u), ("delta", delta), ("A", A), ("B", B), ("C", C)):
        _check_tensor(name, x)
    if u.dim() != 3:
        raise ValueError(f"u: expected shape (batch, D, L), got {tuple(u.shape)}")
    batch, dim, length = u.shape
    if length == 0:
        raise ValueError(f"u: expected L >= 1, got shape {tuple(u.shape)}")
    if delta.shape != u.shape:
        raise ValueError(
            f"delta: expected the shape of u (batch, D, L) = {tuple(u.shape)}, "
            f"got {tuple(delta.shape)}"
        )
    if A.dim() != 2 or A.shape[0] != dim:
        raise ValueError(f"A: expected shape (D, N) = ({dim}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        if x.dim() == 2 and x.shape != A.shape:
            raise ValueError(
                f"{name}: expected shape (D, N) = {tuple(A.shape)}, got {tuple(x.shape)}"
            )
        if x.dim() == 3 and x.shape != (batch, n, length):
            raise ValueError(
                f"{name}: expected shape (batch, N, L) = {(batch, n, length)}, got {tuple(x.shape)}"
            )
        if x.dim() not in (2, 3):
            raise ValueError(
                f"{name}: expected shape (D, N) or (batch, N, L), got {tuple(x.shape)}"
            )
        if x.is_complex() != A.is_complex():
            raise TypeError(
                f"{name}: expected a complex dtype exactly when A is complex, got {x.dtype}"
            )
    for name, x, shape in (("D", D, (dim,)), ("delta_bias", delta_bias, (dim,)), ("z", z, u.shape)):
        if x is None:
            continue
        _check_tensor(name, x)
        if x.is_complex():
            raise TypeError(f"{name}: expected a real dtype, got {x.dtype}")
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")
    for name, x in (("u", u), ("delta", delta)):
        if x.is_complex():
            raise TypeError(f"{name}: expected a real dtype, got {x.dtype}")


def _compute_dtype(u: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32 (as Mamba does)."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _complex_of(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def _prepare_delta(delta, delta_bias, delta_softplus, dtype):
    """:math:`\\Delta \\leftarrow \\mathrm{softplus}(\\Delta + b_\\Delta)`, each step optional."""
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def _readout(y, u, D, z):
    """:math:`y \\leftarrow (y + D u) \\cdot \\mathrm{silu}(z)` (each term optional)."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


def _per_step(M: torch.Tensor, u: torch.Tensor) -> list[torch.Tensor]:
    """``B`` or ``C`` at each time step, broadcastable to ``(batch, D, N)``."""
    if M.dim() == 3:
        return [m[:, None, :] for m in M.unbind(-1)]
    return [M] * u.shape[-1]


def selective_scan_sequential(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    return_last_state=False,
):
    """The reference selective scan {eq}`scan-selective`, one time step at a time.

    Per channel :math:`d` and state coordinate :math:`n`:
    :math:`h_t = \\exp(\\Delta_t A)\\, h_{t-1} + \\Delta_t B_t u_t` (ZOH for :math:`A`,
    Euler for :math:`B`, as Mamba does), :math:`y_t = C_t h_t + D u_t`, then
    :math:`y_t \\leftarrow y_t\\, \\mathrm{silu}(z_t)`. For complex ``A`` (conjugate pairs)
    the read-out is :math:`2 \\operatorname{Re}(C_t h_t)`, as in ``mamba_ssm``.

    Shapes: ``u``, ``delta``, ``z`` ``(batch, D, L)``; ``A`` ``(D, N)``; ``B``, ``C``
    ``(D, N)`` or ``(batch, N, L)``; ``D``, ``delta_bias`` ``(D,)``. Returns ``y``
    ``(batch, D, L)`` in the dtype of ``u`` (and the last state ``(batch, D, N)``).
    """
    dtype = _compute_dtype(u)
    cdtype = _complex_of(dtype) if A.is_complex() else dtype
    uf = u.to(dtype)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A, B, C = A.to(cdtype), B.to(cdtype), C.to(cdtype)
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=cdtype, device=u.device)
    ys = []
    for u_t, d_t, b_t, c_t in zip(
        uf.unbind(-1), delta.unbind(-1), _per_step(B, u), _per_step(C, u), strict=True
    ):
        h = torch.exp(d_t[..., None] * A) * h + (d_t * u_t)[..., None] * b_t
        y_t = (h * c_t).sum(-1)
        ys.append(2 * y_t.real if y_t.is_complex() else y_t)
    y = _readout(torch.stack(ys, dim=-1), uf, D, z).to(u.dtype)
    return (y, h) if return_last_state else y


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    method: str = "auto",
):
    """Selective scan of S6/Mamba {eq}`scan-selective`, with the signature of ``mamba_ssm``.

    Same arguments, shapes and semantics as
    ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:

    Args:
        u: input ``(batch, D, L)``.
        delta: step sizes :math:`\\Delta` ``(batch, D, L)`` (before bias and softplus).
        A: ``(D, N)`` real (or complex, conjugate-pair convention).
        B, C: ``(D, N)`` (time-invariant) or ``(batch, N, L)`` (selective).
        D: optional skip ``(D,)``.
        z: optional gate ``(batch, D, L)``; the output is multiplied by ``silu(z)``.
        delta_bias: optional ``(D,)`` added to ``delta``.
        delta_softplus: apply softplus to ``delta`` (after the bias).
        return_last_state: also return :math:`h_{L-1}` ``(batch, D, N)``.
        method: ``"sequential"``, ``"hillis_steele"``, ``"blelloch"``, ``"chunked"``,
            ``"triton"`` or ``"auto"``.

    Returns:
        ``y`` ``(batch, D, L)`` in the dtype of ``u``, or ``(y, last_state)``.
    """
    _check_selective_inputs(u, delta, A, B, C, D, z, delta_bias)
    method = _check_method(method, SELECTIVE_METHODS)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if method == "triton":
        from ssm.triton_scan import selective_scan_triton

        return selective_scan_triton(*args)
    return selective_scan_sequential(*args)

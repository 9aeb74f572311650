"""Linear recurrences as scans: the sequential reference and parallel scans (chapter 6).

Shape letters (as in Mamba): ``batch``, ``D`` channels, ``L`` time steps, ``N`` state size.

The linear recurrence eq. (scan-recurrence) is :math:`h_t = a_t h_{t-1} + b_t` with
:math:`h_{-1} = 0`, along the last dimension of ``a`` and ``b``. The selective scan of
S6/Mamba eq. (scan-selective) runs that recurrence with :math:`a = \\exp(\\Delta A)` and
:math:`b = \\Delta B u` per channel and state coordinate, and reads out :math:`y = C h + D u`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "linear_scan",
    "selective_scan",
    "scan_sequential",
    "scan_hillis_steele",
    "scan_blelloch",
    "scan_chunked",
    "reverse_scan",
    "LinearScanFn",
    "selective_scan_sequential",
    "SelectiveScanFn",
]

LINEAR_METHODS = ("sequential", "hillis_steele", "blelloch", "chunked", "triton", "auto")
SELECTIVE_METHODS = (
    "sequential",
    "hillis_steele",
    "blelloch",
    "chunked",
    "compiled",
    "triton",
    "auto",
)


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
    """The reference loop for eq. (scan-recurrence): :math:`h_t = a_t h_{t-1} + b_t`.

    Iterates over ``unbind(-1)`` and stacks once, so that autograd's backward stays linear
    in ``L`` (indexing ``h[..., t]`` in the loop would make it quadratic).

    Args:
        a, b: ``(..., L)``, same shape and dtype, real or complex.
        h0: optional initial state ``(...)``; zero when ``None``.

    Returns:
        The states :math:`h_0, \\dots, h_{L-1}`, shape ``(..., L)``.
    """
    h = torch.zeros_like(b[..., 0]) if h0 is None else h0
    hs = []
    for a_t, b_t in zip(a.unbind(-1), b.unbind(-1), strict=True):
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, dim=-1)


def _identity_pad(a: torch.Tensor, b: torch.Tensor, length: int):
    """Pad ``a`` with ones and ``b`` with zeros to ``length``: the identity element (1, 0)."""
    extra = length - a.shape[-1]
    if extra == 0:
        return a, b
    shape = (*a.shape[:-1], extra)
    return torch.cat([a, a.new_ones(shape)], -1), torch.cat([b, b.new_zeros(shape)], -1)


def _shift_right(x: torch.Tensor, offset: int, fill: float) -> torch.Tensor:
    """``x`` delayed by ``offset`` steps along the last dim, the gap filled with ``fill``."""
    pad = torch.full((*x.shape[:-1], offset), fill, dtype=x.dtype, device=x.device)
    return torch.cat([pad, x[..., :-offset]], -1)


def scan_hillis_steele(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hillis–Steele scan of eq. (scan-recurrence): depth :math:`\\lceil\\log_2 L\\rceil`,
    work :math:`O(L \\log L)`.

    At level :math:`k` every element :math:`t \\ge 2^k` combines with element
    :math:`t - 2^k` by the operator eq. (scan-operator); elements before :math:`2^k`
    combine with the identity :math:`(1, 0)`.

    Args:
        a, b: ``(..., L)``, same shape and dtype, real or complex.

    Returns:
        The states ``h``, shape ``(..., L)``.
    """
    offset = 1
    while offset < a.shape[-1]:
        b = a * _shift_right(b, offset, 0.0) + b
        a = a * _shift_right(a, offset, 1.0)
        offset *= 2
    return b


def scan_blelloch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Blelloch's work-efficient scan of eq. (scan-recurrence): work :math:`O(L)`,
    depth :math:`2 \\lceil\\log_2 L\\rceil`.

    Up-sweep: combine neighbouring pairs :math:`(2i, 2i+1)` with eq. (scan-operator),
    which halves the sequence; scan the half recursively (it yields the states at the
    odd positions); down-sweep: each even position :math:`2i` combines the state at
    :math:`2i - 1` with its own element. Odd lengths are padded with the identity.

    Args:
        a, b: ``(..., L)``, same shape and dtype, real or complex.

    Returns:
        The states ``h``, shape ``(..., L)``.
    """
    length = a.shape[-1]
    if length == 1:
        return b
    a, b = _identity_pad(a, b, length + length % 2)
    a_even, a_odd, b_even, b_odd = a[..., 0::2], a[..., 1::2], b[..., 0::2], b[..., 1::2]
    h_odd = scan_blelloch(a_even * a_odd, a_odd * b_even + b_odd)  # up-sweep, recurse
    h_even = a_even * _shift_right(h_odd, 1, 0.0) + b_even  # down-sweep
    return torch.stack([h_even, h_odd], -1).flatten(-2)[..., :length]


def scan_chunked(a: torch.Tensor, b: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Two-level chunked scan of eq. (scan-recurrence), the structure of GPU kernels.

    1. Split time into chunks of length ``chunk`` (default :math:`\\lceil\\sqrt L\\rceil`)
       and scan inside every chunk from a zero state, all chunks at once.
    2. Scan over the chunk totals :math:`(\\prod a, h_{\\text{last}})` to get the state
       entering every chunk.
    3. Fix up: add :math:`(\\prod_{s \\le t} a_s)\\, h_{\\text{in}}` inside each chunk
       eq. (scan-chunk-fixup).

    Args:
        a, b: ``(..., L)``, same shape and dtype, real or complex.
        chunk: chunk length; ``None`` picks :math:`\\lceil\\sqrt L\\rceil`.

    Returns:
        The states ``h``, shape ``(..., L)``.
    """
    length = a.shape[-1]
    chunk = chunk or max(1, math.isqrt(length - 1) + 1)
    n_chunks = -(-length // chunk)
    a, b = _identity_pad(a, b, n_chunks * chunk)
    a = a.reshape(*a.shape[:-1], n_chunks, chunk)
    b = b.reshape(*b.shape[:-1], n_chunks, chunk)
    h_local = scan_sequential(a, b)  # (..., n_chunks, chunk): every chunk in parallel
    a_prefix = torch.cumprod(a, -1)  # products of a inside each chunk
    h_out = scan_sequential(a_prefix[..., -1], h_local[..., -1])  # (..., n_chunks)
    h_in = _shift_right(h_out, 1, 0.0)
    h = h_local + a_prefix * h_in[..., None]
    return h.flatten(-2)[..., :length]


SCANS = {
    "sequential": scan_sequential,
    "hillis_steele": scan_hillis_steele,
    "blelloch": scan_blelloch,
    "chunked": scan_chunked,
}


def reverse_scan(a: torch.Tensor, g: torch.Tensor, method: str) -> torch.Tensor:
    """The adjoint recurrence eq. (scan-adjoint): :math:`G_t = g_t + a^*_{t+1} G_{t+1}`.

    A scan run backwards in time, with :math:`a^*` the complex conjugate of ``a``
    (equal to ``a`` for real inputs) and :math:`G_L = 0`.

    Args:
        a: ``(..., L)`` the coefficients of the forward recurrence.
        g: ``(..., L)`` the upstream gradient :math:`\\partial \\mathcal L / \\partial h`.
        method: a key of ``SCANS``.

    Returns:
        The adjoint ``G``, shape ``(..., L)``.
    """
    a_next = _shift_left(a.conj(), 1, 0.0)
    return SCANS[method](a_next.flip(-1), g.flip(-1)).flip(-1)


def _shift_left(x: torch.Tensor, offset: int, fill: float) -> torch.Tensor:
    """``x`` advanced by ``offset`` steps along the last dim, the end filled with ``fill``."""
    pad = torch.full((*x.shape[:-1], offset), fill, dtype=x.dtype, device=x.device)
    return torch.cat([x[..., offset:], pad], -1)


class LinearScanFn(torch.autograd.Function):
    """:math:`h = \\mathrm{scan}(a, b)` with the derived backward eq. (scan-grads).

    Saves only ``a`` and ``b``; the backward recomputes the states and runs the adjoint
    recurrence as a reverse scan with the same method.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, method: str) -> torch.Tensor:
        """The states ``h`` ``(..., L)`` by the scan ``SCANS[method]``; saves ``a`` and ``b``."""
        ctx.save_for_backward(a, b)
        ctx.method = method
        return SCANS[method](a, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor):
        """Gradients of ``a`` and ``b`` by eq. (scan-adjoint) and eq. (scan-grads)."""
        a, b = ctx.saved_tensors
        G = reverse_scan(a, grad_h, ctx.method)
        grad_a = None
        if ctx.needs_input_grad[0]:
            h_prev = _shift_right(SCANS[ctx.method](a, b), 1, 0.0)
            grad_a = G * h_prev.conj()
        return grad_a, G if ctx.needs_input_grad[1] else None, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """Solve :math:`h_t = a_t h_{t-1} + b_t`, :math:`h_{-1} = 0`, along the last dim.

    Implements eq. (scan-recurrence) with the scan of eq. (scan-operator). The sequential
    method is differentiated by autograd through the loop; the parallel methods use
    ``LinearScanFn``, whose backward is the reverse scan eq. (scan-adjoint).

    Args:
        a, b: ``(..., L)``, same shape, float32/float64/complex64/complex128.
        method: ``"sequential"`` (the reference loop), ``"hillis_steele"``, ``"blelloch"``,
            ``"chunked"`` or ``"auto"`` (``"chunked"``: work-efficient, few wide steps).

    Returns:
        The states ``h``, shape ``(..., L)``, same dtype as ``a``.
    """
    _check_linear_inputs(a, b)
    method = _check_method(method, LINEAR_METHODS)
    if method == "triton":
        raise ValueError(
            "method: 'triton' is provided for selective_scan only; use 'sequential', "
            "'hillis_steele', 'blelloch', 'chunked' or 'auto' for linear_scan"
        )
    if method == "auto":
        method = "chunked"
    if method == "sequential":
        return scan_sequential(a, b)
    return LinearScanFn.apply(a, b, method)


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
):
    """The reference selective scan eq. (scan-selective), one time step at a time.

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


def _block(M: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``B`` or ``C`` on the time steps ``start:stop``, broadcastable to ``(batch, D, N, T)``."""
    if M.dim() == 3:
        return M[:, None, :, start:stop]  # (batch, 1, N, T)
    return M[None, :, :, None]  # (1, D, N, 1)


def _sum_to(x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Sum a ``(batch, D, N, T)`` gradient down to the layout of ``B``/``C`` (one block)."""
    if M.dim() == 3:
        return x.sum(1)  # (batch, N, T)
    return x.sum((0, 3))  # (D, N)


def _discretize(u, delta, A, B_blk):
    """:math:`\\bar A_t = \\exp(\\Delta_t A)` and :math:`\\bar B_t u_t = \\Delta_t B_t u_t`
    for the time steps of ``u``, ``delta`` ``(batch, D, T)``; each ``(batch, D, N, T)``
    (eq. (scan-selective))."""
    d = delta[:, :, None, :]
    return torch.exp(d * A[None, :, :, None]), (d * u[:, :, None, :]) * B_blk


def _block_states(A_bar, Bu, h0, scan):
    """States of one block started from ``h0`` ``(batch, D, N)``: :math:`h_0` is folded
    into the first input, :math:`b_0 \\leftarrow b_0 + a_0 h_{\\text{in}}`."""
    Bu = torch.cat([(Bu[..., 0] + A_bar[..., 0] * h0)[..., None], Bu[..., 1:]], -1)
    return scan(A_bar, Bu)


def _read(h: torch.Tensor, C_blk: torch.Tensor) -> torch.Tensor:
    """:math:`y_t = C_t h_t` summed over the state, or :math:`2 \\operatorname{Re}` of it."""
    y = (h * C_blk).sum(2)
    return 2 * y.real if y.is_complex() else y


def _forward_block(u, delta, A, B_blk, C_blk, h0, method: str):
    """One block of the forward: the read-out ``(batch, D, T)`` and the state leaving it."""
    A_bar, Bu = _discretize(u, delta, A, B_blk)
    hs = _block_states(A_bar, Bu, h0, SCANS[method])
    return _read(hs, C_blk), hs[..., -1].clone()  # a copy: a view would keep the block alive


def _backward_block(u, delta, A, B_blk, C_blk, h0, grad_y, carry, method: str):
    """One block of the backward, eq. (scan-selective-grads), from the state ``h0`` entering
    the block and the gradient ``carry`` flowing in from the next block. Returns the
    gradients of ``u``, ``delta`` ``(batch, D, T)``, ``A`` ``(D, N)``, ``B_blk`` and
    ``C_blk`` (unsummed, ``(batch, D, N, T)``) and the carry for the previous block."""
    scale = 2.0 if A.is_complex() else 1.0  # y = 2 Re(C h) for complex A
    A_bar, Bu = _discretize(u, delta, A, B_blk)
    hs = _block_states(A_bar, Bu, h0, SCANS[method])
    g = scale * grad_y[:, :, None, :] * C_blk.conj()  # direct dL/dh_t
    g = torch.cat([g[..., :-1], (g[..., -1] + carry)[..., None]], -1)
    G = reverse_scan(A_bar, g, method)  # adjoint: dL/dh_t in total
    h_prev = torch.cat([h0[..., None], hs[..., :-1]], -1)
    grad_X = G * h_prev.conj() * A_bar.conj()  # through A_bar = exp(X), X = delta A
    grad_Bu = (G * B_blk.conj()).sum(2)
    grad_Bu = grad_Bu.real if grad_Bu.is_complex() else grad_Bu
    grad_dX = (grad_X * A[None, :, :, None].conj()).sum(2)
    grad_dX = grad_dX.real if grad_dX.is_complex() else grad_dX
    grad_A = (grad_X * delta[:, :, None, :]).sum((0, 3))
    grad_B = G * (delta * u)[:, :, None, :]
    grad_C = scale * grad_y[:, :, None, :] * hs.conj()
    return (
        grad_Bu * delta,
        grad_dX + grad_Bu * u,
        grad_A,
        grad_B,
        grad_C,
        A_bar[..., 0].conj() * G[..., 0],
    )


_COMPILED: dict = {}


def _block_fn(fn, compiled: bool):
    """``fn``, or its ``torch.compile``-d version (compiled once per input shape)."""
    if not compiled:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn]


class SelectiveScanFn(torch.autograd.Function):
    """The selective scan core :math:`y = C h`, :math:`h_t = \\bar A_t h_{t-1} + \\bar B_t u_t`,
    computed block by block of ``block`` time steps.

    Neither forward nor backward ever holds a ``(batch, D, N, L)`` tensor: the forward keeps
    only the state entering each block, the backward recomputes each block's states from it
    and runs the adjoint recurrence eq. (scan-adjoint) block by block, from the last block to
    the first, with the gradients of eq. (scan-selective-grads). Saved for backward: the
    inputs and ``L / block`` boundary states ``(batch, D, N)``. With ``compiled=True`` the
    per-block functions are fused by ``torch.compile``.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, block: int, method: str, compiled: bool = False):
        """``(y, last_state)``: ``(batch, D, L)`` read-out and ``(batch, D, N)`` last state."""
        forward_block = _block_fn(_forward_block, compiled)
        h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=A.dtype, device=u.device)
        ys, h_in = [], []
        for start in range(0, u.shape[-1], block):
            stop = min(start + block, u.shape[-1])
            h_in.append(h)
            B_blk, C_blk = _block(B, start, stop), _block(C, start, stop)
            y, h = forward_block(
                u[..., start:stop], delta[..., start:stop], A, B_blk, C_blk, h, method
            )
            ys.append(y)
        ctx.save_for_backward(u, delta, A, B, C, torch.stack(h_in))
        ctx.block, ctx.method, ctx.compiled = block, method, compiled
        return torch.cat(ys, -1), h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_last):
        """Gradients of ``u``, ``delta``, ``A``, ``B``, ``C`` by eq. (scan-selective-grads)."""
        u, delta, A, B, C, h_in = ctx.saved_tensors
        backward_block = _block_fn(_backward_block, ctx.compiled)
        grad_u, grad_delta, grad_A = (
            torch.zeros_like(u),
            torch.zeros_like(delta),
            torch.zeros_like(A),
        )
        grad_B, grad_C = torch.zeros_like(B), torch.zeros_like(C)
        carry = grad_last.clone()  # dL/dh at the end of the current block, from later times
        starts = list(range(0, u.shape[-1], ctx.block))
        for k, start in reversed(list(enumerate(starts))):
            stop = min(start + ctx.block, u.shape[-1])
            gu, gd, gA, gB, gC, carry = backward_block(
                u[..., start:stop],
                delta[..., start:stop],
                A,
                _block(B, start, stop),
                _block(C, start, stop),
                h_in[k],
                grad_y[..., start:stop],
                carry,
                ctx.method,
            )
            grad_u[..., start:stop], grad_delta[..., start:stop] = gu, gd
            grad_A += gA
            _accumulate(grad_B, _sum_to(gB, B), start, stop)
            _accumulate(grad_C, _sum_to(gC, C), start, stop)
        return grad_u, grad_delta, grad_A, grad_B, grad_C, None, None, None


def _accumulate(buf: torch.Tensor, value: torch.Tensor, start: int, stop: int) -> None:
    """Add one block's gradient into the buffer of ``B`` or ``C`` (per step or shared)."""
    if buf.dim() == 3:
        buf[..., start:stop] += value
    else:
        buf += value


def _selective_scan_chunked(
    u, delta, A, B, C, block: int = 64, method: str = "chunked", compiled: bool = False
):
    """The blocked, recomputing selective scan core: ``(y, last_state)``.

    Blocks of 64 steps with the chunked scan inside: the fastest of the block lengths 32, 64,
    128 and inner scans measured on a CPU, and small enough that the per-block tensors
    ``(batch, D, N, 64)`` stay far below the sequential loop's memory. ``compiled=True``
    fuses the per-block functions with ``torch.compile`` (a one-off compile per shape)."""
    return SelectiveScanFn.apply(u, delta, A, B, C, block, method, compiled)


def _selective_scan_materialised(u, delta, A, B, C, method: str):
    """The straightforward parallel selective scan: build :math:`\\bar A` and
    :math:`\\bar B u` for all ``L`` at once, ``(batch, D, N, L)``, and scan them."""
    A_bar, Bu = _discretize(u, delta, A, _block(B, 0, u.shape[-1]))
    hs = LinearScanFn.apply(A_bar, Bu, method)
    return _read(hs, _block(C, 0, u.shape[-1])), hs[..., -1]


# Largest state (batch * D * N elements) for which the blocked scan beats the loop on a CPU.
# Measured with one thread, float32, forward + backward (chapter 6): at 2048 and 4096 elements
# the chunked scan is 1.4-2.6x faster than the loop; at 8192 they are even and at 40960 the
# loop is 4-6x faster, because the (batch, D, N, 64) block tensors no longer fit in cache while
# the loop's per-step operations are large enough to amortise their overhead.
CPU_CHUNKED_MAX_STATE = 4096


def _auto_method(device: torch.device, complex_A: bool, state_size: int) -> str:
    """The fastest correct method for ``device`` and a state of ``state_size`` elements
    (batch * D * N): Triton on CUDA when it imports and ``A`` is real (the kernels take real
    ``A``), else the blocked chunked scan for states up to ``CPU_CHUNKED_MAX_STATE`` elements
    and the sequential loop above it (measured in chapter 6)."""
    if device.type == "cuda" and not complex_A:
        try:
            import ssm.triton_scan  # noqa: F401
        except ImportError:
            return "chunked"
        return "triton"
    if device.type == "cpu" and state_size > CPU_CHUNKED_MAX_STATE:
        return "sequential"
    return "chunked"


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
    """Selective scan of S6/Mamba eq. (scan-selective), with the signature of ``mamba_ssm``.

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
            ``"compiled"`` (the chunked scan fused by ``torch.compile``, compiled once per
            shape), ``"triton"`` or ``"auto"`` (Triton on CUDA when it imports, else
            ``"chunked"``).

    Returns:
        ``y`` ``(batch, D, L)`` in the dtype of ``u``, or ``(y, last_state)``.
    """
    _check_selective_inputs(u, delta, A, B, C, D, z, delta_bias)
    method = _check_method(method, SELECTIVE_METHODS)
    if method == "auto":
        method = _auto_method(u.device, A.is_complex(), u.shape[0] * A.shape[0] * A.shape[1])
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if method == "triton":
        from ssm.triton_scan import selective_scan_triton

        return selective_scan_triton(*args)
    if method == "sequential":
        return selective_scan_sequential(*args)
    dtype = _compute_dtype(u)
    cdtype = _complex_of(dtype) if A.is_complex() else dtype
    uf = u.to(dtype)
    delta = _prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A, B, C = A.to(cdtype), B.to(cdtype), C.to(cdtype)
    if method in ("chunked", "compiled"):
        y, last = _selective_scan_chunked(uf, delta, A, B, C, compiled=method == "compiled")
    else:
        y, last = _selective_scan_materialised(uf, delta, A, B, C, method)
    y = _readout(y, uf, D, z).to(u.dtype)
    return (y, last) if return_last_state else y

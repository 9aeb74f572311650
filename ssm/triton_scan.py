"""The selective scan as fused Triton kernels, forward and backward (chapter 7).

Shape letters, as in Mamba: ``batch``; ``D`` channels (``dim`` in the kernels); ``L`` time
steps (``seqlen``); ``N`` state size (``dstate``). In the kernels, capitalised names are
pointers and lower-case names are tiles; each load says its tile shape. One program owns
one batch element and ``BLOCK_D`` channels, and walks along time in chunks of ``BLOCK_L``
steps. Inside a chunk the recurrence {eq}`gpu-recurrence` is a ``tl.associative_scan``
of ``(a, b)`` pairs with the operator {eq}`gpu-combine`; the state ``h`` (``BLOCK_D``,
``N``) is carried from chunk to chunk in registers and never written to HBM, except at
chunk boundaries (``(batch, D, n_chunks, N)``) for the backward pass, which recomputes
the states of a chunk from its boundary state and runs the reverse scan
{eq}`gpu-reverse` for the gradients.

Importing this module imports ``triton``. On a machine without CUDA it first sets
``TRITON_INTERPRET=1`` (unless the variable is already set), because Triton reads the
variable when ``@triton.jit`` runs, i.e. when this module is imported: the kernels then
run on CPU tensors through the Triton interpreter, which is slow but executes the same
kernel code. Importing ``ssm`` never imports this module; ``method="triton"`` does.
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton
    import triton.language as tl
except ImportError as err:  # pragma: no cover - exercised only where triton is missing
    raise ImportError(
        "ssm.triton_scan (method='triton') needs the 'triton' package, which is not installed "
        "(pip install 'triton>=3.0', or install ssm with the [triton] extra)"
    ) from err

__all__ = [
    "selective_scan_triton",
    "interpreter_enabled",
    "compile_kernels",
    "fused_scan_bytes",
    "materialised_scan_bytes",
]


def interpreter_enabled() -> bool:
    """True when the kernels run through the Triton interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


if interpreter_enabled() and not isinstance(tl.sum, triton.runtime.interpreter.InterpretedFunction):
    raise RuntimeError(
        "ssm.triton_scan: TRITON_INTERPRET=1, but triton was imported before the variable was set, "
        "so its own library (tl.sum, tl.zeros, ...) was built for a GPU and cannot run in the "
        "interpreter; set TRITON_INTERPRET=1 before anything imports triton (e.g. in the shell)"
    )


@triton.jit
def _combine(a_left, b_left, a_right, b_right):
    """The operator of eq. (gpu-combine): apply (a_left, b_left), then (a_right, b_right)."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def _delta_activation(delta_raw, bias, SOFTPLUS: tl.constexpr):
    """Delta = softplus(delta_raw + bias), or delta_raw + bias.

    softplus(x) = log(1 + e^x), taken as x above 20 and as e^x below -15, where 1 + e^x
    rounds to 1 in float32 and the logarithm would return 0 instead of e^x.
    """
    x = delta_raw + bias
    if SOFTPLUS:
        e = tl.exp(tl.minimum(x, 20.0))
        x = tl.where(x > 20.0, x, tl.where(x < -15.0, e, tl.log(1.0 + e)))
    return x


@triton.jit
def _silu(z):
    """silu(z) = z * sigmoid(z)."""
    return z / (1.0 + tl.exp(-z))


@triton.jit
def _last_along_time(x, BLOCK_L: tl.constexpr):
    """x[:, :, -1] of a (BLOCK_D, BLOCK_N, BLOCK_L) tile, as a masked sum (no dynamic indexing)."""
    last = tl.arange(0, BLOCK_L)[None, None, :] == BLOCK_L - 1
    return tl.sum(tl.where(last, x, 0.0), axis=2)


@triton.jit
def _first_along_time(x, BLOCK_L: tl.constexpr):
    """x[:, :, 0] of a (BLOCK_D, BLOCK_N, BLOCK_L) tile."""
    first = tl.arange(0, BLOCK_L)[None, None, :] == 0
    return tl.sum(tl.where(first, x, 0.0), axis=2)


@triton.jit
def _selective_scan_fwd_kernel(
    U, DELTA, A, B, C, DSKIP, Z, DELTA_BIAS,  # inputs
    OUT, STATES, LAST_STATE,  # outputs
    dim, seqlen, dstate, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """Forward of eq. (gpu-recurrence): out, chunk-boundary states and the last state."""
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batch * D * L may exceed 2**31
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn_offs = offs_d[:, None] * dstate + offs_n[None, :]
    a_coef = tl.load(A + dn_offs, mask=mask_dn, other=0.0)  # (BLOCK_D, BLOCK_N)
    bias = tl.zeros((BLOCK_D,), dtype=a_coef.dtype)
    if HAS_BIAS:
        bias = tl.load(DELTA_BIAS + offs_d, mask=mask_d, other=0.0)  # (BLOCK_D,)
    d_skip = tl.zeros((BLOCK_D,), dtype=a_coef.dtype)
    if HAS_D:
        d_skip = tl.load(DSKIP + offs_d, mask=mask_d, other=0.0)  # (BLOCK_D,)
    if not VAR_B:
        b_tile = tl.load(B + dn_offs, mask=mask_dn, other=0.0)[:, :, None]  # (BLOCK_D, BLOCK_N, 1)
    if not VAR_C:
        c_tile = tl.load(C + dn_offs, mask=mask_dn, other=0.0)[:, :, None]  # (BLOCK_D, BLOCK_N, 1)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=a_coef.dtype)
    states_offs = ((pid_b * dim + offs_d[:, None]) * n_chunks) * dstate + offs_n[None, :]
    for chunk in range(0, n_chunks):
        tl.store(STATES + states_offs + chunk * dstate, h, mask=mask_dn)
        offs_l = chunk * BLOCK_L + tl.arange(0, BLOCK_L)  # (BLOCK_L,)
        mask_l = offs_l < seqlen
        mask_dl = mask_d[:, None] & mask_l[None, :]
        seq_offs = (pid_b * dim + offs_d[:, None]) * seqlen + offs_l[None, :]
        u = tl.load(U + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
        delta = tl.load(DELTA + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
        delta = tl.where(mask_dl, _delta_activation(delta, bias[:, None], SOFTPLUS), 0.0)
        nl_offs = (pid_b * dstate + offs_n[:, None]) * seqlen + offs_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        if VAR_B:
            b_tile = tl.load(B + nl_offs, mask=mask_nl, other=0.0)[
                None, :, :
            ]  # (1, BLOCK_N, BLOCK_L)
        if VAR_C:
            c_tile = tl.load(C + nl_offs, mask=mask_nl, other=0.0)[
                None, :, :
            ]  # (1, BLOCK_N, BLOCK_L)
        a = tl.exp(delta[:, None, :] * a_coef[:, :, None])  # (BLOCK_D, BLOCK_N, BLOCK_L)
        b = (delta * u)[:, None, :] * b_tile  # (BLOCK_D, BLOCK_N, BLOCK_L)
        a_cum, b_cum = tl.associative_scan((a, b), 2, _combine)
        h_all = b_cum + a_cum * h[:, :, None]  # states of the chunk, eq. (gpu-chunk-carry)
        y = tl.sum(h_all * c_tile, axis=1) + d_skip[:, None] * u  # (BLOCK_D, BLOCK_L)
        if HAS_Z:
            z = tl.load(Z + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
            y = y * _silu(z)
        tl.store(OUT + seq_offs, y, mask=mask_dl)
        h = _last_along_time(h_all, BLOCK_L)  # padded steps have a = 1, b = 0
    tl.store(
        LAST_STATE + (pid_b * dim + offs_d[:, None]) * dstate + offs_n[None, :], h, mask=mask_dn
    )


@triton.jit
def _selective_scan_bwd_kernel(
    U, DELTA, A, B, C, DSKIP, Z, DELTA_BIAS, STATES, DOUT, DLAST,  # inputs
    DU, DDELTA, DA_PART, DB, DC, DD_PART, DZ,  # outputs
    dim, seqlen, dstate, n_chunks,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    VAR_B: tl.constexpr, VAR_C: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_L: tl.constexpr,
):  # fmt: skip
    """Backward of eq. (gpu-recurrence): chunks in reverse order, states recomputed per chunk.

    DA_PART, DD_PART and (for B, C shared over time) DB, DC hold per-batch partial sums,
    reduced over the batch afterwards; time-varying DB, DC are summed over channels with
    atomic adds.
    """
    pid_b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: batch * D * L may exceed 2**31
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    offs_n = tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    mask_d = offs_d < dim
    mask_n = offs_n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn_offs = offs_d[:, None] * dstate + offs_n[None, :]
    bdn_offs = (pid_b * dim + offs_d[:, None]) * dstate + offs_n[None, :]
    a_coef = tl.load(A + dn_offs, mask=mask_dn, other=0.0)  # (BLOCK_D, BLOCK_N)
    bias = tl.zeros((BLOCK_D,), dtype=a_coef.dtype)
    if HAS_BIAS:
        bias = tl.load(DELTA_BIAS + offs_d, mask=mask_d, other=0.0)  # (BLOCK_D,)
    d_skip = tl.zeros((BLOCK_D,), dtype=a_coef.dtype)
    if HAS_D:
        d_skip = tl.load(DSKIP + offs_d, mask=mask_d, other=0.0)  # (BLOCK_D,)
    if not VAR_B:
        b_tile = tl.load(B + dn_offs, mask=mask_dn, other=0.0)[:, :, None]  # (BLOCK_D, BLOCK_N, 1)
    if not VAR_C:
        c_tile = tl.load(C + dn_offs, mask=mask_dn, other=0.0)[:, :, None]  # (BLOCK_D, BLOCK_N, 1)
    g_carry = tl.load(DLAST + bdn_offs, mask=mask_dn, other=0.0)  # dLoss/dh after the chunk
    da_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=a_coef.dtype)
    db_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=a_coef.dtype)
    dc_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=a_coef.dtype)
    dd_acc = tl.zeros((BLOCK_D,), dtype=a_coef.dtype)
    states_offs = ((pid_b * dim + offs_d[:, None]) * n_chunks) * dstate + offs_n[None, :]
    for step in range(0, n_chunks):
        chunk = n_chunks - 1 - step
        h0 = tl.load(
            STATES + states_offs + chunk * dstate, mask=mask_dn, other=0.0
        )  # (BLOCK_D, BLOCK_N)
        offs_l = chunk * BLOCK_L + tl.arange(0, BLOCK_L)  # (BLOCK_L,)
        mask_l = offs_l < seqlen
        mask_dl = mask_d[:, None] & mask_l[None, :]
        mask_next = mask_d[:, None] & (offs_l[None, :] + 1 < seqlen)
        seq_offs = (pid_b * dim + offs_d[:, None]) * seqlen + offs_l[None, :]
        u = tl.load(U + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
        delta_raw = tl.load(DELTA + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
        delta = tl.where(mask_dl, _delta_activation(delta_raw, bias[:, None], SOFTPLUS), 0.0)
        delta_next = tl.load(DELTA + seq_offs + 1, mask=mask_next, other=0.0)  # (BLOCK_D, BLOCK_L)
        delta_next = tl.where(
            mask_next, _delta_activation(delta_next, bias[:, None], SOFTPLUS), 0.0
        )
        dout = tl.load(DOUT + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
        nl_offs = (pid_b * dstate + offs_n[:, None]) * seqlen + offs_l[None, :]
        mask_nl = mask_n[:, None] & mask_l[None, :]
        if VAR_B:
            b_tile = tl.load(B + nl_offs, mask=mask_nl, other=0.0)[
                None, :, :
            ]  # (1, BLOCK_N, BLOCK_L)
        if VAR_C:
            c_tile = tl.load(C + nl_offs, mask=mask_nl, other=0.0)[
                None, :, :
            ]  # (1, BLOCK_N, BLOCK_L)
        # recompute the states of this chunk from its boundary state (eq. gpu-chunk-carry)
        a = tl.exp(delta[:, None, :] * a_coef[:, :, None])  # (BLOCK_D, BLOCK_N, BLOCK_L)
        b = (delta * u)[:, None, :] * b_tile  # (BLOCK_D, BLOCK_N, BLOCK_L)
        a_cum, b_cum = tl.associative_scan((a, b), 2, _combine)
        h_all = b_cum + a_cum * h0[:, :, None]
        dy = dout
        if HAS_Z:
            z = tl.load(Z + seq_offs, mask=mask_dl, other=0.0)  # (BLOCK_D, BLOCK_L)
            sig_z = 1.0 / (1.0 + tl.exp(-z))
            y = tl.sum(h_all * c_tile, axis=1) + d_skip[:, None] * u
            tl.store(DZ + seq_offs, dout * y * sig_z * (1.0 + z * (1.0 - sig_z)), mask=mask_dl)
            dy = dout * z * sig_z
        # reverse scan, eq. (gpu-reverse): g_t = a_{t+1} g_{t+1} + dy_t C_t
        a_next = tl.exp(delta_next[:, None, :] * a_coef[:, :, None])  # (BLOCK_D, BLOCK_N, BLOCK_L)
        p_cum, g_cum = tl.associative_scan(
            (a_next, dy[:, None, :] * c_tile), 2, _combine, reverse=True
        )
        g = g_cum + p_cum * g_carry[:, :, None]  # dLoss/dh_t, (BLOCK_D, BLOCK_N, BLOCK_L)
        a_h_prev = h_all - b  # a_t h_{t-1}, without dividing by a_t
        da_acc += tl.sum(g * a_h_prev * delta[:, None, :], axis=2)
        ddelta = tl.sum(g * (a_h_prev * a_coef[:, :, None] + b_tile * u[:, None, :]), axis=1)
        du = tl.sum(g * b_tile, axis=1) * delta + d_skip[:, None] * dy
        dd_acc += tl.sum(dy * u, axis=1)
        if SOFTPLUS:
            ddelta = ddelta / (1.0 + tl.exp(-(delta_raw + bias[:, None])))
        tl.store(DDELTA + seq_offs, ddelta, mask=mask_dl)
        tl.store(DU + seq_offs, du, mask=mask_dl)
        if VAR_B:
            tl.atomic_add(DB + nl_offs, tl.sum(g * (delta * u)[:, None, :], axis=0), mask=mask_nl)
        else:
            db_acc += tl.sum(g * (delta * u)[:, None, :], axis=2)
        if VAR_C:
            tl.atomic_add(DC + nl_offs, tl.sum(dy[:, None, :] * h_all, axis=0), mask=mask_nl)
        else:
            dc_acc += tl.sum(dy[:, None, :] * h_all, axis=2)
        g_carry = _first_along_time(g, BLOCK_L)
    tl.store(DA_PART + bdn_offs, da_acc, mask=mask_dn)
    if not VAR_B:
        tl.store(DB + bdn_offs, db_acc, mask=mask_dn)
    if not VAR_C:
        tl.store(DC + bdn_offs, dc_acc, mask=mask_dn)
    tl.store(DD_PART + pid_b * dim + offs_d, dd_acc, mask=mask_d)


def fused_scan_bytes(
    batch: int,
    dim: int,
    seqlen: int,
    dstate: int,
    *,
    has_z: bool = False,
    backward: bool = False,
    chunk_size: int = 64,
    itemsize: int = 4,
) -> int:
    """HBM bytes a fused selective scan must move, eq. (gpu-bytes-fused); B, C per time step.

    Forward: read u, Delta (and z), write out, each (batch, D, L); read B, C (batch, N, L)
    once (the other channels hit the L2 cache); write the chunk-boundary states
    (batch, D, L / chunk_size, N) and the last state. Backward: read u, Delta, dout (and z)
    and the boundary states; write du, dDelta (and dz); read B, C and read-modify-write
    dB, dC. The state (batch, D, L, N) itself never leaves the chip.
    """
    seq, bc = batch * dim * seqlen, batch * dstate * seqlen
    boundary = batch * dim * dstate * -(-seqlen // chunk_size)
    if not backward:
        elements = (3 + has_z) * seq + 2 * bc + boundary + batch * dim * dstate
    else:
        elements = (5 + 2 * has_z) * seq + 6 * bc + boundary
    return elements * itemsize


def materialised_scan_bytes(
    batch: int, dim: int, seqlen: int, dstate: int, *, itemsize: int = 4
) -> int:
    """A lower bound on the HBM bytes of the unfused forward, eq. (gpu-bytes-naive).

    Separate kernels write A_bar and B_bar u (batch, D, L, N), a scan reads both and writes
    the states h, and the read-out reads h again: six passes over (batch, D, L, N), plus
    u, Delta in and y out. A Blelloch or Hillis-Steele scan makes more passes than one.
    """
    state, seq = batch * dim * seqlen * dstate, batch * dim * seqlen
    return (6 * state + 3 * seq) * itemsize


_SCALAR_ARGS = ("dim", "seqlen", "dstate", "n_chunks")
_FLAG_ARGS = ("HAS_D", "HAS_Z", "HAS_BIAS", "SOFTPLUS", "VAR_B", "VAR_C")


def compile_kernels(
    capability: int = 90,
    dtype: torch.dtype = torch.float32,
    flags: dict[str, bool] | None = None,
    block_d: int = 2,
    dstate: int = 16,
    chunk_size: int = 64,
) -> dict[str, str]:
    """Compile the forward and backward kernels for an NVIDIA GPU, without needing one.

    Runs Triton's full pipeline (Triton IR, GPU IR, LLVM IR, PTX, cubin via ``ptxas``) for
    ``GPUTarget("cuda", capability, 32)``: 80 is an A100, 90 an H100/H200. The interpreter
    accepts code that would not compile, so this is the check that the GPU path is real.
    Only possible when the kernels were defined compiled, i.e. with ``TRITON_INTERPRET=0``.

    Args:
        capability: compute capability times ten (e.g. 80, 90).
        dtype: float32 or float64, the dtype of every tensor argument.
        flags: the switches ``HAS_D, HAS_Z, HAS_BIAS, SOFTPLUS, VAR_B, VAR_C`` (default all on).
        block_d: BLOCK_D, channels per program.
        dstate: N, rounded up to a power of two for BLOCK_N.
        chunk_size: BLOCK_L, time steps per chunk.

    Returns:
        A dict that maps each kernel's name to its PTX source.
    """
    if interpreter_enabled():
        raise RuntimeError(
            "compile_kernels: the kernels were defined for the interpreter (TRITON_INTERPRET=1); "
            "import ssm.triton_scan in a process with TRITON_INTERPRET=0 to compile them"
        )
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    flags = {name: True for name in _FLAG_ARGS} | (flags or {})
    if set(flags) != set(_FLAG_ARGS):
        raise ValueError(f"flags: expected keys among {_FLAG_ARGS}, got {sorted(flags)}")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    pointer = "*fp32" if dtype == torch.float32 else "*fp64"
    constexprs = flags | {
        "BLOCK_D": block_d,
        "BLOCK_N": triton.next_power_of_2(dstate),
        "BLOCK_L": chunk_size,
    }
    ptx = {}
    for kernel in (_selective_scan_fwd_kernel, _selective_scan_bwd_kernel):
        signature = {
            name: "constexpr" if name in constexprs else "i32" if name in _SCALAR_ARGS else pointer
            for name in kernel.arg_names
        }
        source = ASTSource(kernel, signature, constexprs=constexprs)
        compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32))
        ptx[kernel.__name__] = compiled.asm["ptx"]
    return ptx


def _blocks(
    dim: int, seqlen: int, dstate: int, chunk_size: int | None, block_d: int | None
) -> tuple[int, int, int]:
    """Tile sizes (BLOCK_D, BLOCK_N, BLOCK_L): powers of two, small under the interpreter."""
    block_n = triton.next_power_of_2(dstate)
    if chunk_size is None:
        chunk_size = 16 if interpreter_enabled() else 64
    if block_d is None:
        block_d = 1 if interpreter_enabled() else 2
    for name, value in (("chunk_size", chunk_size), ("block_d", block_d)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < 1
            or value & (value - 1)
        ):
            raise ValueError(f"{name}: expected a power of two >= 1, got {value!r}")
    block_l = min(chunk_size, triton.next_power_of_2(seqlen))
    return min(block_d, triton.next_power_of_2(dim)), block_n, block_l


def _flags(B: torch.Tensor, C: torch.Tensor, D, z, delta_bias, delta_softplus: bool) -> dict:
    """The kernels' compile-time switches."""
    return {
        "HAS_D": D is not None,
        "HAS_Z": z is not None,
        "HAS_BIAS": delta_bias is not None,
        "SOFTPLUS": bool(delta_softplus),
        "VAR_B": B.dim() == 3,
        "VAR_C": C.dim() == 3,
    }


class SelectiveScanTriton(torch.autograd.Function):
    """Autograd wrapper: the forward kernel saves chunk-boundary states, the backward kernel
    recomputes everything else from them (recomputation instead of storing (batch, D, L, N))."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, block_d):
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        block_d, block_n, block_l = _blocks(dim, seqlen, dstate, chunk_size, block_d)
        n_chunks = triton.cdiv(seqlen, block_l)
        flags = _flags(B, C, D, z, delta_bias, delta_softplus)
        out = torch.empty_like(u)
        states = torch.empty(batch, dim, n_chunks, dstate, dtype=u.dtype, device=u.device)
        last_state = torch.empty(batch, dim, dstate, dtype=u.dtype, device=u.device)
        dummy = u.new_empty(1)
        grid = (batch, triton.cdiv(dim, block_d))
        _selective_scan_fwd_kernel[grid](
            u, delta, A, B, C,
            dummy if D is None else D, dummy if z is None else z,
            dummy if delta_bias is None else delta_bias,
            out, states, last_state, dim, seqlen, dstate, n_chunks,
            **flags, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.meta = (flags, block_d, block_n, block_l, n_chunks)
        return out, last_state

    @staticmethod
    def backward(ctx, dout, dlast_state):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        flags, block_d, block_n, block_l, n_chunks = ctx.meta
        batch, dim, seqlen = u.shape
        dstate = A.shape[1]
        dout = dout.contiguous()
        dlast = (
            torch.zeros_like(states[:, :, 0]) if dlast_state is None else dlast_state.contiguous()
        )
        du, ddelta = torch.empty_like(u), torch.empty_like(delta)
        dz = torch.empty_like(u) if z is not None else None
        da_part = torch.empty(batch, dim, dstate, dtype=u.dtype, device=u.device)
        dd_part = torch.empty(batch, dim, dtype=u.dtype, device=u.device)
        dB = torch.zeros_like(B) if flags["VAR_B"] else torch.empty_like(da_part)
        dC = torch.zeros_like(C) if flags["VAR_C"] else torch.empty_like(da_part)
        dummy = u.new_empty(1)
        grid = (batch, triton.cdiv(dim, block_d))
        _selective_scan_bwd_kernel[grid](
            u, delta, A, B, C,
            dummy if D is None else D, dummy if z is None else z,
            dummy if delta_bias is None else delta_bias, states, dout, dlast,
            du, ddelta, da_part, dB, dC, dd_part, dummy if dz is None else dz,
            dim, seqlen, dstate, n_chunks,
            **flags, BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=block_l,
        )  # fmt: skip
        dB = dB if flags["VAR_B"] else dB.sum(0)
        dC = dC if flags["VAR_C"] else dC.sum(0)
        dD = dd_part.sum(0) if D is not None else None
        dbias = ddelta.sum((0, 2)) if delta_bias is not None else None
        return du, ddelta, da_part.sum(0), dB, dC, dD, dz, dbias, None, None, None


def _check_tensor(name: str, x, shapes: list[tuple[int, ...]], like: torch.Tensor) -> None:
    """Raise a clear TypeError/ValueError unless ``x`` is a real tensor of one of ``shapes``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (the dtype of u), got {x.dtype}")
    if x.device != like.device:
        raise ValueError(
            f"{name}: expected a tensor on {like.device} (the device of u), got {x.device}"
        )
    if tuple(x.shape) not in shapes:
        expected = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(x.shape)}")


def _check_inputs(u, delta, A, B, C, D, z, delta_bias) -> None:
    """Validate shapes, dtypes and devices of the selective scan's arguments."""
    if not isinstance(u, torch.Tensor):
        raise TypeError(f"u: expected a torch.Tensor, got {type(u).__name__}")
    if u.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"u: expected dtype float32 or float64, got {u.dtype}")
    if u.dim() != 3 or u.shape[-1] == 0:
        raise ValueError(f"u: expected shape (batch, D, L) with L >= 1, got {tuple(u.shape)}")
    if not interpreter_enabled() and u.device.type != "cuda":
        raise ValueError(
            f"u: the compiled Triton kernels need CUDA tensors, got a tensor on {u.device} "
            "(set TRITON_INTERPRET=1 before importing ssm.triton_scan to run them on the CPU)"
        )
    batch, dim, seqlen = u.shape
    _check_tensor("delta", delta, [(batch, dim, seqlen)], u)
    if not isinstance(A, torch.Tensor) or A.dim() != 2 or A.shape[0] != dim:
        got = tuple(A.shape) if isinstance(A, torch.Tensor) else type(A).__name__
        raise ValueError(f"A: expected shape (D, N) = ({dim}, N), got {got}")
    if A.is_complex():
        raise TypeError(
            f"A: the Triton kernels support real A only, got {A.dtype} (use method='chunked')"
        )
    dstate = A.shape[1]
    _check_tensor("A", A, [(dim, dstate)], u)
    _check_tensor("B", B, [(dim, dstate), (batch, dstate, seqlen)], u)
    _check_tensor("C", C, [(dim, dstate), (batch, dstate, seqlen)], u)
    for name, x, shape in (
        ("D", D, (dim,)),
        ("z", z, (batch, dim, seqlen)),
        ("delta_bias", delta_bias, (dim,)),
    ):
        if x is not None:
            _check_tensor(name, x, [shape], u)


def selective_scan_triton(
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
    *,
    chunk_size: int | None = None,
    block_d: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The selective scan of eq. (gpu-recurrence) in fused Triton kernels, differentiable.

    Same arguments and semantics as ``mamba_ssm``'s ``selective_scan_fn`` (real ``A``):
    Delta = softplus(delta + delta_bias) if ``delta_softplus`` else delta + delta_bias;
    h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t (h_{-1} = 0), y_t = C_t h_t + D u_t,
    out = y * silu(z) if ``z`` is given.

    Args:
        u: input (batch, D, L), float32 or float64; every tensor shares u's dtype and device.
        delta: step sizes before bias and softplus, (batch, D, L).
        A: (D, N), real.
        B: (D, N) shared over time, or (batch, N, L) per time step.
        C: (D, N) shared over time, or (batch, N, L) per time step.
        D: optional skip term, (D,).
        z: optional gate, (batch, D, L).
        delta_bias: optional bias added to delta, (D,).
        delta_softplus: apply softplus to Delta (after the bias).
        return_last_state: also return h_{L-1}, (batch, D, N).
        chunk_size: time steps per chunk (BLOCK_L), a power of two; default 64 on a GPU,
            16 under the interpreter.
        block_d: channels per program, a power of two; default 2 on a GPU, 1 under the
            interpreter.

    Returns:
        out (batch, D, L), and the last state (batch, D, N) if ``return_last_state``.

    Runs on CUDA tensors when compiled, and on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    out, last_state = SelectiveScanTriton.apply(
        u.contiguous(),
        delta.contiguous(),
        A.contiguous(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.contiguous(),
        None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.contiguous(),
        delta_softplus,
        chunk_size,
        block_d,
    )
    return (out, last_state) if return_last_state else out

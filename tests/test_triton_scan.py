"""The Triton selective scan against an independent float64 loop, forward and every gradient.

Without CUDA the kernels run through the Triton interpreter (``ssm.triton_scan`` sets
``TRITON_INTERPRET=1`` before importing triton), which executes ``tl.associative_scan`` as a
Python loop of about 60 us per element, so the shapes are tiny: a few channels, N <= 4 and
chunks of 8 or 16 steps, enough to cover several chunks, partial last chunks and partial
channel blocks. On a GPU (``benchmarks/gpu.sh``) the same tests run the compiled kernels.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

if importlib.util.find_spec("triton") is None:  # not importorskip: importing triton here, before
    pytest.skip("triton is not installed", allow_module_level=True)  # ssm.triton_scan, would
from ssm.triton_scan import selective_scan_triton  # noqa: E402  # freeze TRITON_INTERPRET

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def reference_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t u_t one step at a time; returns (out, h_{L-1})."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        B_t = B[None] if B.dim() == 2 else B[:, None, :, t]  # (1 or batch, D or 1, N)
        C_t = C[None] if C.dim() == 2 else C[:, None, :, t]
        d_t = delta[:, :, t, None]  # (batch, D, 1)
        h = torch.exp(d_t * A) * h + d_t * B_t * u[:, :, t, None]
        ys.append((h * C_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return y, h


def make_inputs(
    batch, dim, L, N, var_B, var_C, with_D, with_z, with_bias, dtype=torch.float32, seed=0
):
    """Random inputs with Mamba's ranges: A < 0, Delta in (0, 0.5); absent options are None."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    inputs = {
        "u": randn(batch, dim, L),
        "delta": 0.5 * torch.rand(batch, dim, L, generator=g, dtype=torch.float64),
        "A": -0.5 - torch.rand(dim, N, generator=g, dtype=torch.float64),
        "B": randn(batch, N, L) if var_B else randn(dim, N),
        "C": randn(batch, N, L) if var_C else randn(dim, N),
        "D": randn(dim) if with_D else None,
        "z": randn(batch, dim, L) if with_z else None,
        "delta_bias": 0.1 * randn(dim) if with_bias else None,
    }
    return {k: None if v is None else v.to(dtype) for k, v in inputs.items()}


def leaves(inputs, dtype, device):
    """Fresh leaf tensors that require grad, in ``dtype`` on ``device``."""
    return {
        k: None if v is None else v.detach().to(dtype=dtype, device=device).requires_grad_()
        for k, v in inputs.items()
    }


def loss_of(out, last):
    """A loss that weights every output step and the last state differently."""
    weights = torch.cos(torch.arange(out.shape[-1], dtype=out.dtype, device=out.device))
    return (out * weights).sum() + (last**2).sum()


def run_both(inputs, softplus, dtype=torch.float32, **blocks):
    """Forward + backward of the Triton kernel (in ``dtype``) and of the float64 loop."""
    ours = leaves(inputs, dtype, DEVICE)
    out, last = selective_scan_triton(
        **ours, delta_softplus=softplus, return_last_state=True, **blocks
    )
    loss_of(out, last).backward()
    ref = leaves(inputs, torch.float64, "cpu")
    out_ref, last_ref = reference_scan(**ref, delta_softplus=softplus)
    loss_of(out_ref, last_ref).backward()
    return (out, last, ours), (out_ref, last_ref, ref)


def assert_matches(ours, ref, rtol, atol):
    (out, last, leaves_ours), (out_ref, last_ref, leaves_ref) = ours, ref
    torch.testing.assert_close(out.double().cpu(), out_ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(last.double().cpu(), last_ref.detach(), rtol=rtol, atol=atol)
    for name in NAMES:
        if leaves_ref[name] is None:
            continue
        grad = leaves_ours[name].grad
        assert grad is not None, f"no gradient for {name}"
        torch.testing.assert_close(
            grad.double().cpu(), leaves_ref[name].grad, rtol=rtol, atol=atol, msg=name
        )


# (batch, D, L, N, chunk_size, block_d, var_B, var_C, D, z, delta_bias, softplus)
CASES = [
    (2, 3, 37, 4, 16, 1, True, True, True, True, True, True),  # everything on, L % chunk != 0
    (1, 3, 37, 4, 16, 2, True, True, True, True, True, True),  # partial channel block
    (2, 2, 24, 4, 8, 1, False, False, False, False, False, False),  # B, C per channel, bare scan
    (1, 2, 20, 3, 8, 2, False, True, True, False, True, False),  # mixed B/C, N not a power of 2
    (1, 2, 19, 2, 16, 1, True, False, False, True, False, True),  # mixed the other way
    (2, 1, 16, 4, 16, 1, True, True, True, False, False, False),  # exactly one chunk
    (1, 2, 1, 4, 16, 1, True, True, True, True, True, True),  # L = 1
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_forward_and_gradients_match_loop_float32(case):
    batch, dim, L, N, chunk, block_d, var_B, var_C, with_D, with_z, with_bias, softplus = case
    inputs = make_inputs(
        batch, dim, L, N, var_B, var_C, with_D, with_z, with_bias, dtype=torch.float64
    )
    ours, ref = run_both(inputs, softplus, chunk_size=chunk, block_d=block_d)
    # float32 kernel vs float64 loop: values and gradients are O(1-20) and sums run over at most
    # 37 steps x 4 states, so float32 rounding (6e-8 relative) stays far below 1e-4.
    assert_matches(ours, ref, rtol=1e-4, atol=1e-4)


def test_forward_and_gradients_match_loop_float64():
    inputs = make_inputs(2, 3, 21, 4, True, True, True, True, True, dtype=torch.float64)
    ours, ref = run_both(inputs, True, dtype=torch.float64, chunk_size=8, block_d=2)
    # same arithmetic in float64, different order of operations: agreement to ~1e-13
    assert_matches(ours, ref, rtol=1e-10, atol=1e-10)


def test_long_sequence_is_finite_and_matches_loop():
    L = 16_400  # >= 16k and not a multiple of the chunk size; N = 1 also covers BLOCK_N = 1
    inputs = make_inputs(1, 1, L, 1, True, True, True, False, False, dtype=torch.float64)
    ours = leaves(inputs, torch.float32, DEVICE)
    out, last = selective_scan_triton(**ours, return_last_state=True, chunk_size=1024)
    loss_of(out, last).backward()
    names = ("u", "delta", "A", "B", "C", "D")
    grads = {n: ours[n].grad.double().cpu() for n in names}
    assert torch.isfinite(out).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad():  # autograd through 16k loop steps would take ~40 s
        out_ref, last_ref = reference_scan(**inputs)
    # float32 over 16k steps: each output is a decaying sum, so errors do not accumulate
    torch.testing.assert_close(out.double().cpu(), out_ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(last.double().cpu(), last_ref, rtol=1e-4, atol=1e-4)
    # gradients: the directional derivative along a random v by central differences of the
    # float64 loop (truncation error ~ eps^2 * 1e2 ~ 1e-6), against <grad, v> from the kernel
    gen = torch.Generator().manual_seed(1)
    v = {n: torch.randn(inputs[n].shape, generator=gen, dtype=torch.float64) for n in names}
    eps = 1e-4

    def loss_at(sign):
        moved = dict(inputs) | {n: inputs[n] + sign * eps * v[n] for n in names}
        with torch.no_grad():
            return loss_of(*reference_scan(**moved)).item()

    finite_difference = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    directional = sum((grads[n] * v[n]).sum() for n in names).item()
    # the kernel's gradients are float32 sums of up to 16k terms: relative error << 1e-4
    assert abs(directional - finite_difference) <= 1e-4 * abs(finite_difference), (
        directional,
        finite_difference,
    )


def test_gradient_of_last_state_only():
    inputs = make_inputs(1, 2, 13, 2, True, True, False, False, False, dtype=torch.float64)
    ours = leaves(inputs, torch.float32, DEVICE)
    _, last = selective_scan_triton(**ours, return_last_state=True, chunk_size=8)
    last.sum().backward()
    ref = leaves(inputs, torch.float64, "cpu")
    reference_scan(**ref)[1].sum().backward()
    for name in ("u", "delta", "A", "B"):
        grad = ours[name].grad.double().cpu()
        torch.testing.assert_close(grad, ref[name].grad, rtol=1e-4, atol=1e-5)
    assert ref["C"].grad is None  # the last state does not depend on C
    assert torch.equal(ours["C"].grad, torch.zeros_like(ours["C"]))


def test_returns_only_out_by_default():
    inputs = make_inputs(1, 1, 5, 2, False, False, False, False, False)
    out = selective_scan_triton(**{k: v.to(DEVICE) for k, v in inputs.items() if v is not None})
    assert isinstance(out, torch.Tensor) and out.shape == (1, 1, 5)


def test_selected_by_selective_scan_method_triton():
    import ssm

    inputs = make_inputs(1, 2, 11, 2, True, True, True, True, True)
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    out = ssm.selective_scan(**inputs, delta_softplus=True, method="triton")
    ref = reference_scan(**{k: v.double().cpu() for k, v in inputs.items()}, delta_softplus=True)[0]
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-4)


def _valid():
    return {
        k: v.to(DEVICE) for k, v in make_inputs(2, 3, 6, 4, False, False, True, True, True).items()
    }


@pytest.mark.parametrize(
    ("name", "value", "error", "match"),
    [
        ("u", [1.0], TypeError, "u: expected a torch.Tensor"),
        (
            "u",
            torch.ones(2, 3, 6, dtype=torch.int64),
            TypeError,
            "u: expected dtype float32 or float64",
        ),
        ("u", torch.ones(3, 6), ValueError, r"u: expected shape \(batch, D, L\)"),
        (
            "delta",
            torch.ones(2, 3, 5),
            ValueError,
            r"delta: expected shape \(2, 3, 6\), got \(2, 3, 5\)",
        ),
        (
            "delta",
            torch.ones(2, 3, 6, dtype=torch.float64),
            TypeError,
            "delta: expected dtype torch.float32",
        ),
        ("A", torch.ones(4, 4), ValueError, r"A: expected shape \(D, N\) = \(3, N\), got \(4, 4\)"),
        (
            "A",
            torch.ones(3, 4, dtype=torch.complex64),
            TypeError,
            "A: the Triton kernels support real A only",
        ),
        (
            "B",
            torch.ones(2, 4, 5),
            ValueError,
            r"B: expected shape \(3, 4\) or \(2, 4, 6\), got \(2, 4, 5\)",
        ),
        (
            "C",
            torch.ones(3, 5),
            ValueError,
            r"C: expected shape \(3, 4\) or \(2, 4, 6\), got \(3, 5\)",
        ),
        ("D", torch.ones(4), ValueError, r"D: expected shape \(3,\), got \(4,\)"),
        ("z", torch.ones(2, 3), ValueError, r"z: expected shape \(2, 3, 6\), got \(2, 3\)"),
        ("delta_bias", "0.1", TypeError, "delta_bias: expected a torch.Tensor, got str"),
    ],
)
def test_bad_input_raises_naming_the_argument(name, value, error, match):
    inputs = _valid()
    inputs[name] = value.to(DEVICE) if isinstance(value, torch.Tensor) else value
    with pytest.raises(error, match=match):
        selective_scan_triton(**inputs)


@pytest.mark.parametrize("name", ["chunk_size", "block_d"])
@pytest.mark.parametrize("value", [0, 3, 2.0])
def test_bad_block_sizes_raise(name, value):
    with pytest.raises(ValueError, match=f"{name}: expected a power of two >= 1, got {value!r}"):
        selective_scan_triton(**_valid(), **{name: value})


def _run_python(code: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]  # import ssm from this checkout
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root
    )


def test_importing_ssm_does_not_import_triton():
    result = _run_python(
        "import sys, ssm; assert 'triton' not in sys.modules, 'ssm imported triton'"
    )
    assert result.returncode == 0, result.stderr


def test_missing_triton_gives_a_clear_error():
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import ssm, torch\n"
        "x = torch.ones(1, 1, 4)\n"
        "A, B = -torch.ones(1, 2), torch.ones(1, 2)\n"
        "ssm.selective_scan(x, x, A, B, B, method='triton')\n"
    )
    result = _run_python(code)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "needs the 'triton' package, which is not installed" in result.stderr


def test_fused_bytes_count_the_tensors_the_kernels_touch():
    from ssm.triton_scan import fused_scan_bytes, materialised_scan_bytes

    batch, dim, L, N, chunk = 2, 3, 50, 4, 16
    x = torch.empty(batch, dim, L)  # u, delta, out, z, du, ddelta, dz, dout all have this size
    bc = torch.empty(batch, N, L)  # B, C, dB, dC
    boundary = torch.empty(batch, dim, 4, N)  # ceil(50 / 16) = 4 chunk-boundary states
    last = torch.empty(batch, dim, N)
    forward = 3 * x.nbytes + 2 * bc.nbytes + boundary.nbytes + last.nbytes  # u, delta, out
    assert fused_scan_bytes(batch, dim, L, N, chunk_size=chunk) == forward
    assert fused_scan_bytes(batch, dim, L, N, chunk_size=chunk, has_z=True) == forward + x.nbytes
    # backward: u, delta, dout in; du, ddelta out; B, C in; dB, dC read and written; states in
    backward = 5 * x.nbytes + 6 * bc.nbytes + boundary.nbytes
    assert fused_scan_bytes(batch, dim, L, N, chunk_size=chunk, backward=True) == backward
    states = torch.empty(batch, dim, L, N)
    assert materialised_scan_bytes(batch, dim, L, N) == 6 * states.nbytes + 3 * x.nbytes


def test_non_contiguous_inputs_match_loop():
    inputs = make_inputs(2, 3, 9, 2, True, True, True, True, False)
    # the same values stored time-major, then viewed as (batch, D, L): strides are not C-order
    strided = {
        k: v.transpose(1, 2).contiguous().transpose(1, 2) if k in ("u", "delta", "z") else v
        for k, v in inputs.items()
    }
    assert not strided["u"].is_contiguous()
    out = selective_scan_triton(**{k: v.to(DEVICE) for k, v in strided.items() if v is not None})
    ref = reference_scan(**{k: v.double() for k, v in inputs.items() if v is not None})[0]
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error path")
def test_compiled_kernels_on_cpu_tensors_raise():
    code = (
        "import os; os.environ['TRITON_INTERPRET'] = '0'\n"
        "import torch\n"
        "from ssm.triton_scan import selective_scan_triton\n"
        "x = torch.ones(1, 1, 4)\n"
        "selective_scan_triton(x, x, -torch.ones(1, 2), torch.ones(1, 2), torch.ones(1, 2))\n"
    )
    result = _run_python(code)
    assert result.returncode != 0
    assert "ValueError: u: the compiled Triton kernels need CUDA tensors" in result.stderr


def test_softplus_keeps_tiny_steps():
    # delta + bias near -30: softplus = e^-30 ~ 1e-13, far below float32's 1 + eps; the output
    # (no skip term) is of that size, so it is compared relatively (atol = 0)
    inputs = make_inputs(1, 2, 12, 2, True, True, False, False, False, dtype=torch.float64)
    inputs["delta"] = inputs["delta"] - 30.0
    ours, ref = run_both(inputs, True, chunk_size=8)
    (out, _, leaves_ours), (out_ref, _, leaves_ref) = ours, ref
    torch.testing.assert_close(out.double().cpu(), out_ref.detach(), rtol=1e-4, atol=0)
    grad = leaves_ours["delta"].grad.double().cpu()
    torch.testing.assert_close(grad, leaves_ref["delta"].grad, rtol=1e-4, atol=0)

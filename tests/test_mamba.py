"""Tests for ssm.mamba: S6 discretization, initialisations, the Mamba block and its recurrent step.

References are independent of the code under test: matrix exponentials of augmented matrices
for the ZOH discretization, and plain float64 loops over time (written here, with explicit
indices) for the selective scan and for the whole Mamba block.
"""

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import ssm
from ssm.mamba import (
    Mamba,
    MambaBlock,
    MambaStack,
    RMSNorm,
    inverse_softplus,
    s6_A_log_init,
    s6_discretize,
    s6_dt_bias_init,
)

# float64 references computed in a different order: agreement to 1e-10 is rounding only.
F64 = {"rtol": 1e-10, "atol": 1e-10}
# float32 against a float64 reference over tens of steps: ~1e-6 relative rounding per op.
F32 = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- independent references
def selective_scan_loop(u, delta, A, B, C, D, z, delta_bias, softplus):
    """mamba_ssm's selective_scan_ref semantics, float64, one (batch, channel, step) at a time."""
    batch, dim, L = u.shape
    N = A.shape[1]
    d = delta + delta_bias[None, :, None] if delta_bias is not None else delta
    d = torch.log1p(torch.exp(d)) if softplus else d
    y = torch.zeros(batch, dim, L, dtype=torch.float64)
    last = torch.zeros(batch, dim, N, dtype=torch.float64)
    for b in range(batch):
        for e in range(dim):
            h = torch.zeros(N, dtype=torch.float64)
            for t in range(L):
                B_t = B[b, :, t] if B.dim() == 3 else B[e]
                C_t = C[b, :, t] if C.dim() == 3 else C[e]
                h = torch.exp(d[b, e, t] * A[e]) * h + d[b, e, t] * B_t * u[b, e, t]
                out = (h * C_t).sum()
                if D is not None:
                    out = out + D[e] * u[b, e, t]
                if z is not None:
                    out = out * z[b, e, t] / (1 + torch.exp(-z[b, e, t]))
                y[b, e, t] = out
            last[b, e] = h
    return y, last


def mamba_loop(m: Mamba, x: torch.Tensor) -> torch.Tensor:
    """The Mamba block in float64 with explicit loops over time and conv taps."""
    batch, L, _ = x.shape
    e, n, r, w = m.d_inner, m.d_state, m.dt_rank, m.d_conv
    xz = x @ m.in_proj.weight.T
    if m.in_proj.bias is not None:
        xz = xz + m.in_proj.bias
    xi, z = xz[..., :e], xz[..., e:]
    kernel = m.conv1d.weight[:, 0, :]  # (e, w); tap w-1 multiplies the current input
    xc = torch.zeros(batch, L, e, dtype=x.dtype)
    for t in range(L):
        acc = m.conv1d.bias.clone() if m.conv1d.bias is not None else torch.zeros(e)
        for k in range(w):
            s = t - (w - 1) + k
            if s >= 0:
                acc = acc + kernel[:, k] * xi[:, s]
        xc[:, t] = acc * torch.sigmoid(acc)
    x_dbl = xc @ m.x_proj.weight.T
    dt_low, B, C = x_dbl[..., :r], x_dbl[..., r : r + n], x_dbl[..., r + n :]
    delta = torch.log1p(torch.exp(dt_low @ m.dt_proj.weight.T + m.dt_proj.bias))
    A = -torch.exp(m.A_log)
    h = torch.zeros(batch, e, n, dtype=x.dtype)
    ys = []
    for t in range(L):
        dt = delta[:, t, :, None]
        h = torch.exp(dt * A) * h + dt * B[:, t, None, :] * xc[:, t, :, None]
        y = (h * C[:, t, None, :]).sum(-1) + m.D * xc[:, t]
        ys.append(y * z[:, t] * torch.sigmoid(z[:, t]))
    y = torch.stack(ys, dim=1) @ m.out_proj.weight.T
    return y + m.out_proj.bias if m.out_proj.bias is not None else y


def run_steps(model, x):
    cache = model.allocate_cache(x.shape[0])
    ys = []
    for x_t in x.unbind(1):
        y_t, cache = model.step(x_t, cache)
        ys.append(y_t)
    return torch.stack(ys, dim=1), cache


# ----------------------------------------------------------------------- initialisations
def test_inverse_softplus_inverts_softplus():
    y = torch.logspace(-4, 1.5, 50, dtype=torch.float64)
    torch.testing.assert_close(F.softplus(inverse_softplus(y)), y, **F64)


def test_A_log_init_is_minus_one_to_N():
    A = -torch.exp(s6_A_log_init(3, 5))
    expected = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]] * 3)
    torch.testing.assert_close(A, expected, rtol=1e-6, atol=0)


def test_dt_bias_init_is_log_uniform_in_range():
    dt = F.softplus(s6_dt_bias_init(20000, dt_min=0.001, dt_max=0.1).double())
    assert dt.min() >= 0.001 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    # log(dt) ~ U(log 0.001, log 0.1): mean -4.605, std 4.605/sqrt(3); 20000 samples give a
    # standard error of 0.019 for the mean, so 0.1 is a >5-sigma bound.
    log_dt = dt.log()
    assert abs(log_dt.mean().item() - 0.5 * (math.log(0.001) + math.log(0.1))) < 0.1
    assert abs(log_dt.std().item() - (math.log(0.1) - math.log(0.001)) / math.sqrt(12)) < 0.1


def test_mamba_init_and_ssm_param_marks():
    m = Mamba(32, d_state=8, expand=2, dt_min=0.01, dt_max=0.05)
    assert m.d_inner == 64 and m.dt_rank == 2
    torch.testing.assert_close(m.A, -torch.arange(1.0, 9.0).repeat(64, 1), rtol=1e-6, atol=0)
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 0.01 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    assert m.dt_proj.weight.abs().max() <= 2**-0.5
    marked = {name for name, p in m.named_parameters() if getattr(p, "_ssm_param", False)}
    assert marked == {"A_log", "x_proj.weight", "dt_proj.weight", "dt_proj.bias"}
    no_wd = {name for name, p in m.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert no_wd == {"A_log", "D", "dt_proj.bias"}


def test_ssm_param_marks_survive_deepcopy_and_pickle():
    m = MambaStack(8, n_layers=2, d_state=4)
    buffer = io.BytesIO()
    torch.save(m, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(m), torch.load(buffer, weights_only=False), m.double()):
        marked = sorted(n for n, p in clone.named_parameters() if getattr(p, "_ssm_param", False))
        expected = sorted(
            f"layers.{i}.mixer.{name}" for i in range(2) for name in Mamba.SSM_PARAMETERS
        )
        assert marked == expected


def test_dt_rank_auto_and_explicit():
    assert Mamba(17).dt_rank == 2
    assert Mamba(8, dt_rank=3).dt_rank == 3


# ------------------------------------------------------------------------ discretization
def _zoh_by_matrix_exp(delta, A, B):
    """ZOH of x' = a x + b u from exp([[Δa, Δb], [0, 0]]) = [[A_bar, B_bar], [0, 1]]."""
    M = torch.zeros(2, 2, dtype=A.dtype)
    M[0, 0], M[0, 1] = delta * A, delta * B
    E = torch.linalg.matrix_exp(M)
    return E[0, 0], E[0, 1]


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_s6_discretize_zoh_matches_matrix_exponential(dtype):
    batch, D, N, L = 2, 3, 4, 5
    delta = torch.rand(batch, D, L, dtype=torch.float64) * 2 + 0.01
    A = -torch.rand(D, N, dtype=dtype) - 0.1
    if dtype.is_complex:
        A = A + 1j * torch.randn(D, N, dtype=torch.float64)
    B = torch.randn(batch, N, L, dtype=dtype)
    A_bar, B_bar = s6_discretize(delta, A, B, method="zoh")
    assert A_bar.shape == B_bar.shape == (batch, D, N, L)
    for b in range(batch):
        for e in range(D):
            for n in range(N):
                for t in range(L):
                    a_ref, b_ref = _zoh_by_matrix_exp(delta[b, e, t].to(dtype), A[e, n], B[b, n, t])
                    torch.testing.assert_close(A_bar[b, e, n, t], a_ref, **F64)
                    torch.testing.assert_close(B_bar[b, e, n, t], b_ref, **F64)


def test_s6_discretize_euler_is_delta_B_and_time_invariant_B():
    delta = torch.rand(2, 3, 4, dtype=torch.float64)
    A = -torch.rand(3, 5, dtype=torch.float64)
    B = torch.randn(3, 5, dtype=torch.float64)
    A_bar, B_bar = s6_discretize(delta, A, B, method="euler")
    for e in range(3):
        for t in range(4):
            torch.testing.assert_close(B_bar[1, e, :, t], delta[1, e, t] * B[e], **F64)
            torch.testing.assert_close(A_bar[1, e, :, t], torch.exp(delta[1, e, t] * A[e]), **F64)


def test_zoh_and_euler_agree_to_second_order_in_delta():
    # ZOH B_bar = Δ B (1 + Δ A / 2 + O(Δ²)): the gap divided by Δ² tends to |A B| / 2.
    A = torch.tensor([[-3.0]], dtype=torch.float64)
    B = torch.tensor([[2.0]], dtype=torch.float64)
    for dt in (1e-2, 1e-3, 1e-4):
        delta = torch.full((1, 1, 1), dt, dtype=torch.float64)
        gap = s6_discretize(delta, A, B, "zoh")[1] - s6_discretize(delta, A, B, "euler")[1]
        assert abs(gap.abs().item() / dt**2 - 3.0) < 10 * dt


def test_s6_discretize_zoh_limit_at_A_zero_and_finite_gradient():
    delta = torch.full((1, 1, 2), 0.5, dtype=torch.float64)
    A = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    B = torch.ones(1, 1, dtype=torch.float64)
    _, B_bar = s6_discretize(delta, A, B, method="zoh")
    torch.testing.assert_close(B_bar, delta[:, :, None, :] * B[None, :, :, None], **F64)
    B_bar.sum().backward()
    assert torch.isfinite(A.grad).all()


def test_selective_scan_equals_discretize_then_linear_scan():
    batch, D, N, L = 2, 3, 4, 11
    u = torch.randn(batch, D, L, dtype=torch.float64)
    delta = torch.rand(batch, D, L, dtype=torch.float64)
    A = -torch.rand(D, N, dtype=torch.float64)
    B, C = (
        torch.randn(batch, N, L, dtype=torch.float64),
        torch.randn(batch, N, L, dtype=torch.float64),
    )
    A_bar, B_bar = s6_discretize(delta, A, B, method="euler")
    h = ssm.linear_scan(A_bar, B_bar * u[:, :, None, :], method="sequential")
    y = torch.einsum("benl,bnl->bel", h, C)
    ref, _ = selective_scan_loop(u, delta, A, B, C, None, None, None, False)
    torch.testing.assert_close(y, ref, **F64)


# ---------------------------------------------------------------- the selective scan API
@pytest.mark.parametrize("L", [1, 7, 100])
@pytest.mark.parametrize("variable_BC", [True, False])
def test_selective_scan_against_independent_loop(L, variable_BC):
    batch, D, N = 2, 3, 4
    u = torch.randn(batch, D, L, dtype=torch.float64)
    delta = torch.randn(batch, D, L, dtype=torch.float64)
    A = -torch.exp(torch.randn(D, N, dtype=torch.float64))
    shape = (batch, N, L) if variable_BC else (D, N)
    B, C = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    Dskip, z, bias = torch.randn(D, dtype=torch.float64), torch.randn_like(u), torch.randn(D)
    bias = bias.double()
    y, last = ssm.selective_scan(
        u,
        delta,
        A,
        B,
        C,
        D=Dskip,
        z=z,
        delta_bias=bias,
        delta_softplus=True,
        return_last_state=True,
    )
    y_ref, last_ref = selective_scan_loop(u, delta, A, B, C, Dskip, z, bias, True)
    torch.testing.assert_close(y, y_ref, **F64)
    torch.testing.assert_close(last, last_ref, **F64)


def test_selective_scan_float32_close_to_float64_loop():
    batch, D, N, L = 2, 4, 8, 64
    args64 = [
        torch.randn(batch, D, L, dtype=torch.float64),
        torch.randn(batch, D, L, dtype=torch.float64),
        -torch.exp(torch.randn(D, N, dtype=torch.float64)),
        torch.randn(batch, N, L, dtype=torch.float64),
        torch.randn(batch, N, L, dtype=torch.float64),
    ]
    y32 = ssm.selective_scan(*[a.float() for a in args64], delta_softplus=True)
    y_ref, _ = selective_scan_loop(*args64, None, None, None, True)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y_ref, **F32)


# ----------------------------------------------------------------------- the Mamba block
@pytest.mark.parametrize("L", [1, 3, 17])
def test_mamba_forward_against_loop(L):
    m = Mamba(8, d_state=4, d_conv=4, expand=2, bias=True).double()
    x = torch.randn(2, L, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), mamba_loop(m, x), **F64)


def test_mamba_float32_forward_close_to_float64_loop():
    m = Mamba(16, d_state=8)
    x = torch.randn(2, 40, 16)
    with torch.no_grad():
        y32 = m(x)
        y64 = mamba_loop(m.double(), x.double())
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), y64, **F32)


@pytest.mark.parametrize("L", [1, 2, 9])
def test_mamba_step_equals_forward(L):
    m = Mamba(8, d_state=4, d_conv=3).double()
    x = torch.randn(3, L, 8, dtype=torch.float64)
    with torch.no_grad():
        y_steps, (_, h) = run_steps(m, x)
        y, (_, h_forward) = m.prefill(x)
    torch.testing.assert_close(y_steps, m(x), **F64)
    torch.testing.assert_close(y_steps, y, **F64)
    torch.testing.assert_close(h, h_forward, **F64)


@pytest.mark.parametrize("split", [1, 2, 6])
def test_prefill_then_step_equals_forward(split):
    m = Mamba(8, d_state=4, d_conv=4).double()
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    with torch.no_grad():
        y_full = m(x)
        y_prompt, cache = m.prefill(x[:, :split])
        ys = [y_prompt]
        for x_t in x[:, split:].unbind(1):
            y_t, cache = m.step(x_t, cache)
            ys.append(y_t[:, None])
    torch.testing.assert_close(torch.cat(ys, dim=1), y_full, **F64)


def test_step_does_not_modify_the_cache_in_place():
    m = Mamba(8, d_state=4).double()
    cache = m.allocate_cache(2)
    saved = [c.clone() for c in cache]
    m.step(torch.randn(2, 8, dtype=torch.float64), cache)
    for c, s in zip(cache, saved, strict=True):
        torch.testing.assert_close(c, s, rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_block_and_stack_step_equal_forward(norm):
    x = torch.randn(2, 7, 8, dtype=torch.float64)
    block = MambaBlock(8, norm=norm, d_state=4).double()
    stack = MambaStack(8, n_layers=3, norm=norm, d_state=4).double()
    with torch.no_grad():
        torch.testing.assert_close(run_steps(block, x)[0], block(x), **F64)
        torch.testing.assert_close(run_steps(stack, x)[0], stack(x), **F64)
        # the residual block is x + mixer(norm(x)), computed here by hand
        torch.testing.assert_close(block(x), x + mamba_loop(block.mixer, block.norm(x)), **F64)


def test_rmsnorm_closed_form():
    norm = RMSNorm(6, eps=0.0).double()
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x = torch.randn(4, 6, dtype=torch.float64)
    expected = x / x.pow(2).mean(-1, keepdim=True).sqrt() * torch.arange(1.0, 7.0)
    torch.testing.assert_close(norm(x), expected, **F64)


def test_mamba_gradcheck_float64():
    m = Mamba(4, d_state=2, expand=1).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6)


def test_every_parameter_receives_a_gradient():
    # guards against computing the SSM under no_grad (its parameters would never train)
    m = MambaStack(8, n_layers=2, d_state=4)
    x = torch.randn(2, 12, 8)
    (m(x) * torch.randn(2, 12, 8)).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_long_sequence_is_finite():
    m = Mamba(4, d_state=4, expand=2)
    with torch.no_grad():
        y = m(torch.randn(1, 16384, 4))
    assert y.shape == (1, 16384, 4) and torch.isfinite(y).all()


def test_delta_matches_softplus_of_projection():
    m = Mamba(8, d_state=4).double()
    x = torch.randn(2, m.d_inner, 5, dtype=torch.float64)
    r = m.dt_rank
    dt_low = torch.einsum("bel,ke->bkl", x, m.x_proj.weight[:r])
    expected = F.softplus(
        torch.einsum("brl,er->bel", dt_low, m.dt_proj.weight) + m.dt_proj.bias[:, None]
    )
    torch.testing.assert_close(m.delta(x), expected, **F64)


# ------------------------------------------------------------------------------ bad input
def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="d_model: expected a positive int, got 0"):
        Mamba(0)
    with pytest.raises(TypeError, match="d_state: expected a positive int, got float"):
        Mamba(8, d_state=4.0)
    with pytest.raises(ValueError, match="dt_rank: expected a positive int"):
        Mamba(8, dt_rank=-1)
    with pytest.raises(ValueError, match="dt_min, dt_max: expected 0 < dt_min <= dt_max"):
        Mamba(8, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="norm: expected 'rms' or 'layer', got 'batch'"):
        MambaBlock(8, norm="batch")
    with pytest.raises(ValueError, match="n_layers: expected a positive int"):
        MambaStack(8, n_layers=0)


def test_bad_forward_and_step_inputs():
    m = Mamba(8, d_state=4)
    with pytest.raises(
        ValueError, match=r"x: expected shape \(batch, L, d_model=8\), got \(2, 5\)"
    ):
        m(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, L, d_model=8\)"):
        m(torch.randn(2, 5, 7))
    with pytest.raises(TypeError, match="x: expected a floating-point tensor, got torch.int64"):
        m(torch.ones(2, 5, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(batch, d_model=8\)"):
        m.step(torch.randn(2, 1, 8), m.allocate_cache(2))
    with pytest.raises(TypeError, match="cache: expected a tuple"):
        m.step(torch.randn(2, 8), list(m.allocate_cache(2)))
    with pytest.raises(ValueError, match="cache: expected shapes"):
        m.step(torch.randn(3, 8), m.allocate_cache(2))
    with pytest.raises(ValueError, match="batch: expected a positive int"):
        m.allocate_cache(0)
    stack = MambaStack(8, n_layers=2, d_state=4)
    with pytest.raises(ValueError, match="cache: expected a list of 2 layer caches"):
        stack.step(torch.randn(2, 8), stack.allocate_cache(2)[:1])


def test_bad_discretize_and_softplus_inputs():
    delta, A = torch.rand(2, 3, 4), -torch.rand(3, 5)
    with pytest.raises(ValueError, match="method: expected 'zoh' or 'euler', got 'bilinear'"):
        s6_discretize(delta, A, torch.randn(2, 5, 4), method="bilinear")
    with pytest.raises(
        ValueError, match=r"B: expected \(batch, N, L\) = \(2, 5, 4\), got \(2, 4, 5\)"
    ):
        s6_discretize(delta, A, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"B: expected \(batch, N, L\) or \(D, N\)"):
        s6_discretize(delta, A, torch.randn(5, 3))
    with pytest.raises(
        ValueError, match=r"delta, A: expected delta \(batch, D, L\) and A \(D, N\)"
    ):
        s6_discretize(delta, -torch.rand(4, 5), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="y: expected positive values"):
        inverse_softplus(torch.tensor([0.5, 0.0]))
    with pytest.raises(TypeError, match="y: expected a floating-point tensor"):
        inverse_softplus(torch.tensor([1, 2]))


@pytest.mark.parametrize("method", ["hillis_steele", "blelloch", "chunked", "auto"])
def test_mamba_scan_methods_agree_with_loop_in_forward_and_backward(method):
    # The block must go through ssm.selective_scan, so every scan method gives the same block.
    reference = Mamba(8, d_state=4, scan_method="sequential").double()
    block = Mamba(8, d_state=4, scan_method=method).double()
    block.load_state_dict(reference.state_dict())
    x = torch.randn(2, 37, 8, dtype=torch.float64)
    upstream = torch.randn(2, 37, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(block(x), mamba_loop(reference, x), **F64)
    (reference(x) * upstream).sum().backward()
    (block(x) * upstream).sum().backward()
    for (name, p_ref), p in zip(reference.named_parameters(), block.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_ref.grad, **F64, msg=lambda m, n=name: f"{n}: {m}")


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    L=st.integers(1, 12),
    d_model=st.integers(1, 6),
    d_state=st.integers(1, 5),
    d_conv=st.integers(1, 5),
    expand=st.integers(1, 2),
    seed=st.integers(0, 2**16),
)
def test_step_equals_forward_over_random_shapes(batch, L, d_model, d_state, d_conv, expand, seed):
    torch.manual_seed(seed)
    m = Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand).double()
    x = torch.randn(batch, L, d_model, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(run_steps(m, x)[0], m(x), **F64)
        torch.testing.assert_close(m(x), mamba_loop(m, x), **F64)

"""Trainable LTI layers (chapters 3-4) and the SequenceBlock (chapter 8 reuses it).

The convolutional form (FFT) is checked against the recurrent form (a step loop) and against a
direct dense convolution with the kernel; every parameter must receive a gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch

import ssm
from ssm.layers import DSS, S4, S4D, SequenceBlock, ssm_parameters

LAYERS = {
    "S4": lambda H, N: S4(H, N, dt_min=0.01, dt_max=0.5),
    "S4D-lin-zoh": lambda H, N: S4D(H, N, dt_min=0.01, dt_max=0.5),
    "S4D-legs-bilinear": lambda H, N: S4D(H, N, 0.01, 0.5, init="legs", method="bilinear"),
    "S4D-inv": lambda H, N: S4D(H, N, 0.01, 0.5, init="inv"),
    "DSS": lambda H, N: DSS(H, N, dt_min=0.01, dt_max=0.5),
}


@pytest.fixture(autouse=True)
def float64():
    """Layers built in float64 (their complex parameters become complex128)."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def run_steps(module: torch.nn.Module, u: torch.Tensor) -> torch.Tensor:
    if isinstance(getattr(module, "layer", module), DSS):
        getattr(module, "layer", module).setup_step(u.shape[-1])
    state, ys = module.default_state(u.shape[0]), []
    for k in range(u.shape[-1]):
        y_k, state = module.step(u[..., k], state)
        ys.append(y_k)
    return torch.stack(ys, dim=-1)


def direct_convolution(u: torch.Tensor, K: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y_k = sum_{l<=k} K_l u_{k-l} + D u_k with an explicit lower-triangular Toeplitz matrix."""
    L = u.shape[-1]
    idx = torch.arange(L)
    lag = idx[:, None] - idx[None, :]
    T = torch.where(lag >= 0, K[:, lag.clamp(min=0)], torch.zeros(()))  # (H, L, L)
    return torch.einsum("hkj,bhj->bhk", T, u) + D[:, None] * u


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("L", [1, 13, 64])
def test_step_equals_convolution(name: str, L: int) -> None:
    torch.manual_seed(0)
    layer = LAYERS[name](3, 8)
    u = torch.randn(2, 3, L)
    y = layer(u)
    assert y.shape == (2, 3, L) and y.dtype == torch.float64
    # float64: FFT convolution vs loop differ by rounding only
    torch.testing.assert_close(y, run_steps(layer, u), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(
        y, direct_convolution(u, layer.kernel(L), layer.D), rtol=1e-9, atol=1e-10
    )


def test_s4_layer_kernel_matches_dense_hippo_at_init() -> None:
    """At init, S4's kernel is that of V^*-rotated HiPPO-LegS: rebuild it densely."""
    layer = S4(2, 8)
    Lambda, P, B, V = ssm.dplr(8)
    A = ssm.hippo(8)[0].to(torch.complex128)
    C = layer.modes()[3].detach()
    dt = layer.log_dt.exp().detach()
    A_bar, B_bar = ssm.discretize(
        (V.conj().T @ A @ V).expand(2, 8, 8), B.expand(2, 8), dt, "bilinear"
    )
    K_ref = ssm.ssm_kernel(A_bar, B_bar, C, 50)
    torch.testing.assert_close(layer.kernel(50), K_ref.real, rtol=1e-9, atol=1e-11)
    assert K_ref.imag.abs().max() < 1e-12  # conjugate pairs: the kernel is real


@pytest.mark.parametrize("name", LAYERS)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(1)
    layer = LAYERS[name](4, 8)
    layer(torch.randn(2, 4, 32)).pow(2).sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        # per tensor, not per entry: Im C of S4D-Lin's real mode (A_0 = -1/2) is truly inert
        assert p.grad.abs().sum() > 0, f"{pname} has a zero gradient"


@pytest.mark.parametrize("name", LAYERS)
def test_layer_gradcheck_small(name: str) -> None:
    torch.manual_seed(2)
    layer = LAYERS[name](2, 4)
    u = torch.randn(1, 2, 6, requires_grad=True)
    params = tuple(layer.parameters())

    def f(u, *values):
        return torch.func.functional_call(
            layer, dict(zip((n for n, _ in layer.named_parameters()), values, strict=True)), (u,)
        )

    assert torch.autograd.gradcheck(f, (u, *(p.detach().requires_grad_() for p in params)))


@pytest.mark.parametrize("name", LAYERS)
def test_ssm_parameters_tagged(name: str) -> None:
    layer = LAYERS[name](2, 4)
    expected = {"log_dt", "log_neg_real", "imag", "P", "B"} & dict(layer.named_parameters()).keys()
    tagged = {n for n, p in layer.named_parameters() if any(p is q for q in ssm_parameters(layer))}
    assert tagged == expected
    attribute = {n for n, p in layer.named_parameters() if getattr(p, "_ssm_param", False)}
    assert attribute == expected  # the attribute convention that ssm.train and ssm.mamba share
    model = torch.nn.Sequential(SequenceBlock(2, layer), SequenceBlock(2, LAYERS[name](2, 4)))
    assert len(ssm_parameters(model)) == 2 * len(expected)
    assert len(ssm_parameters(copy.deepcopy(model))) == 2 * len(expected)


@pytest.mark.parametrize("name", LAYERS)
def test_long_sequence_finite_float32(name: str) -> None:
    torch.set_default_dtype(torch.float32)
    layer = LAYERS[name](2, 16)
    y = layer(torch.randn(1, 2, 16384))
    assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("prenorm", [True, False])
@pytest.mark.parametrize("name", LAYERS)
def test_sequence_block_step_equals_forward(name: str, prenorm: bool) -> None:
    torch.manual_seed(3)
    block = SequenceBlock(3, LAYERS[name](3, 8), dropout=0.1, prenorm=prenorm).eval()
    u = torch.randn(2, 3, 20)
    y = block(u)
    assert y.shape == u.shape
    torch.testing.assert_close(y, run_steps(block, u), rtol=1e-9, atol=1e-10)


def test_sequence_block_matches_its_definition() -> None:
    """Pre-norm: y = u + GLU(W GELU(layer(LayerNorm(u)))), written out with torch primitives."""
    torch.manual_seed(4)
    block = SequenceBlock(3, S4D(3, 8)).eval()
    u = torch.randn(2, 3, 10)
    x = torch.nn.functional.layer_norm(u.transpose(1, 2), (3,), block.norm.weight, block.norm.bias)
    z = torch.nn.functional.gelu(block.layer(x.transpose(1, 2))).transpose(1, 2)
    z = z @ block.output.weight.T + block.output.bias
    ref = u + (z[..., :3] * torch.sigmoid(z[..., 3:])).transpose(1, 2)
    torch.testing.assert_close(block(u), ref)
    block.train()
    block.dropout.p = 0.5
    assert not torch.allclose(block(u), ref)  # dropout is active in training mode


def test_layers_train_a_step() -> None:
    """One Adam step on a regression target lowers the loss (parameters actually move)."""
    torch.manual_seed(5)
    for name in LAYERS:
        layer = LAYERS[name](2, 8)
        u = torch.randn(4, 2, 30)
        target = torch.roll(u, 3, dims=-1)
        opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
        losses = []
        for _ in range(5):
            loss = (layer(u) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], name


def test_layer_bad_inputs() -> None:
    with pytest.raises(ValueError, match="N: expected an even state size"):
        S4(2, 7)
    with pytest.raises(ValueError, match="N: expected an even state size"):
        S4D(2, 5)
    with pytest.raises(ValueError, match="H: expected a positive int"):
        DSS(0, 8)
    with pytest.raises(ValueError, match="dt_min, dt_max: expected 0 < dt_min <= dt_max"):
        S4D(2, 8, dt_min=0.0)
    with pytest.raises(ValueError, match="dt_min, dt_max: expected 0 < dt_min <= dt_max"):
        S4(2, 8, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="method: expected 'zoh' or 'bilinear'"):
        S4D(2, 8, method="euler")
    with pytest.raises(ValueError, match="kind: expected one of"):
        S4D(2, 8, init="foo")
    layer = S4D(2, 8)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, H, L\) with H = 2"):
        layer(torch.randn(1, 3, 10))
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, H, L\)"):
        layer(torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, H\) with H = 2"):
        layer.step(torch.randn(1, 3), layer.default_state(1))
    with pytest.raises(TypeError, match="u: expected a torch.Tensor"):
        layer([1.0, 2.0])
    dss = DSS(2, 8)
    with pytest.raises(RuntimeError, match=r"call setup_step\(L\) first"):
        dss.step(torch.randn(1, 2), dss.default_state(1))
    with pytest.raises(ValueError, match="L: expected a positive int"):
        dss.setup_step(0)
    with pytest.raises(TypeError, match="layer: expected an nn.Module"):
        SequenceBlock(2, "S4")
    with pytest.raises(ValueError, match=r"dropout: expected a probability in \[0, 1\)"):
        SequenceBlock(2, layer, dropout=1.0)
    with pytest.raises(ValueError, match=r"u: expected shape \(batch, H, L\) with H = 4"):
        SequenceBlock(4, S4D(4, 8))(torch.randn(1, 2, 5))

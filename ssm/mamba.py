"""The selective state space model (S6) and the Mamba block of chapter 5.

Shape letters used in the docstrings and ``einsum`` strings:

====  ==========================================================
b     batch
l     sequence length ``L``
d     model width ``d_model`` (the residual stream)
e     inner width ``D = expand * d_model`` (channels of the SSM)
n     state size ``N`` per channel
r     rank ``R`` of the projection that produces the step size
w     width of the causal depthwise convolution ``d_conv``
====  ==========================================================

Parameters that define the SSM itself (``A_log``, the step-size projection
``dt_proj.weight``/``dt_proj.bias`` and ``x_proj.weight``, which produces the low-rank input of
Δ and the input-dependent B and C) carry the attribute ``_ssm_param = True``, so a trainer can
give them their own optimizer group (for example a lower learning rate and no weight decay):
``[p for p in model.parameters() if getattr(p, "_ssm_param", False)]``. ``A_log``, ``D`` and
``dt_proj.bias`` also carry ``_no_weight_decay = True``, as in Mamba. The tags survive
``copy.deepcopy`` and pickling; the names are also listed in ``Mamba.SSM_PARAMETERS`` and
``Mamba.NO_WEIGHT_DECAY``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm.scan import selective_scan

__all__ = [
    "inverse_softplus",
    "s6_A_log_init",
    "s6_dt_bias_init",
    "s6_discretize",
    "Mamba",
    "RMSNorm",
    "MambaBlock",
    "MambaStack",
]

MambaCache = tuple[Tensor, Tensor]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return value


def inverse_softplus(y: Tensor) -> Tensor:
    """The inverse of ``softplus(x) = log(1 + exp(x))``: ``x = y + log(1 - exp(-y))``.

    Implements {eq}`s6-dt-init` (the bias that makes ``softplus`` return ``y``).

    Args:
        y: positive values, any shape, floating dtype.

    Returns:
        ``x`` with ``softplus(x) == y``, same shape and dtype.
    """
    if not torch.is_tensor(y) or not y.is_floating_point():
        raise TypeError(
            f"y: expected a floating-point tensor, got {getattr(y, 'dtype', type(y).__name__)}"
        )
    if (y <= 0).any():
        raise ValueError(
            f"y: expected positive values (softplus is positive), got min {y.min().item():.3g}"
        )
    return y + torch.log(-torch.expm1(-y))


def s6_A_log_init(D: int, N: int) -> Tensor:
    """Mamba's real initialisation of the state matrix: ``A = -(1, 2, ..., N)`` for every channel.

    The parameter is stored as ``A_log = log(1..N)`` so that ``A = -exp(A_log)`` stays negative
    (stable) during training. Implements {eq}`s6-A-init`.

    Returns:
        ``A_log`` of shape ``(D, N)``, float32.
    """
    _positive_int("D", D)
    _positive_int("N", N)
    return torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D, 1)


def s6_dt_bias_init(
    D: int, dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4
) -> Tensor:
    """Bias of the step-size projection: ``softplus(bias)`` is log-uniform in ``[dt_min, dt_max]``.

    Samples ``Δ = exp(U(log dt_min, log dt_max))`` per channel (clamped below at
    ``dt_init_floor``) and returns ``inverse_softplus(Δ)``. Implements {eq}`s6-dt-init`.

    Returns:
        the bias, shape ``(D,)``, float32.
    """
    _positive_int("D", D)
    if not 0 < dt_min <= dt_max:
        raise ValueError(f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
    log_dt = torch.rand(D) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
    return inverse_softplus(torch.exp(log_dt).clamp(min=dt_init_floor))


def _expm1_over_x(x: Tensor) -> Tensor:
    """``(exp(x) - 1) / x`` with its limit 1 at ``x = 0`` (and a finite gradient there)."""
    zero = x == 0
    safe = torch.where(zero, torch.ones_like(x), x)
    return torch.where(zero, torch.ones_like(x), torch.expm1(safe) / safe)


def s6_discretize(
    delta: Tensor, A: Tensor, B: Tensor, method: Literal["zoh", "euler"] = "zoh"
) -> tuple[Tensor, Tensor]:
    """Per-time-step discretization of a diagonal selective SSM.

    ``A_bar = exp(Δ A)`` ({eq}`s6-zoh-A`) in both methods; for the input matrix
    ``"zoh"`` gives ``B_bar = (Δ A)^{-1} (exp(Δ A) - 1) Δ B`` ({eq}`s6-zoh-B`) and ``"euler"``
    the simplification ``B_bar = Δ B`` ({eq}`s6-euler-B`) that Mamba's kernels use.

    Args:
        delta: step sizes Δ, ``(batch, D, L)``, positive.
        A: diagonal state matrices, ``(D, N)``, real or complex.
        B: input matrices, ``(batch, N, L)`` (one per time step) or ``(D, N)`` (fixed).
        method: ``"zoh"`` or ``"euler"`` (for ``B_bar`` only).

    Returns:
        ``(A_bar, B_bar)``, each ``(batch, D, N, L)`` with time last, ready for
        ``ssm.linear_scan(A_bar, B_bar * u[:, :, None, :])``.
    """
    if method not in ("zoh", "euler"):
        raise ValueError(f"method: expected 'zoh' or 'euler', got {method!r}")
    if delta.dim() != 3 or A.dim() != 2 or A.shape[0] != delta.shape[1]:
        raise ValueError(
            "delta, A: expected delta (batch, D, L) and A (D, N), "
            f"got {tuple(delta.shape)} and {tuple(A.shape)}"
        )
    if B.dim() == 3:
        if B.shape[0] != delta.shape[0] or B.shape[1] != A.shape[1] or B.shape[2] != delta.shape[2]:
            raise ValueError(
                f"B: expected (batch, N, L) = {(delta.shape[0], A.shape[1], delta.shape[2])}, "
                f"got {tuple(B.shape)}"
            )
        B_t = B[:, None, :, :]  # (b, 1, n, l)
    elif B.shape == A.shape:
        B_t = B[None, :, :, None]  # (1, e, n, 1)
    else:
        raise ValueError(
            f"B: expected (batch, N, L) or (D, N) = {tuple(A.shape)}, got {tuple(B.shape)}"
        )
    dA = torch.einsum("bel,en->benl", delta, A)
    A_bar = torch.exp(dA)
    dB = delta[:, :, None, :] * B_t
    B_bar = dB if method == "euler" else _expm1_over_x(dA) * dB
    return A_bar, B_bar


class Mamba(nn.Module):
    """The Mamba block {cite}`gu2023mamba`: in-projection, conv, SiLU, S6, gate, out-projection.

    Implements {eq}`s6-block`. ``forward`` runs the whole sequence through ``ssm.selective_scan``
    (with ``method=scan_method``); ``step`` runs one token through the recurrence
    {eq}`s6-step` with a ``(conv_state, ssm_state)`` cache from :meth:`allocate_cache`.

    Args:
        d_model: width of the input and output.
        d_state: state size ``N`` per channel.
        d_conv: width of the causal depthwise convolution.
        expand: the inner width is ``D = expand * d_model``.
        dt_rank: rank ``R`` of the Δ projection; ``"auto"`` is ``ceil(d_model / 16)``.
        dt_min, dt_max: range of the log-uniform initial step sizes.
        scan_method: the ``method`` passed to ``ssm.selective_scan``.
        dt_init_floor: lower clamp of the initial step sizes.
        conv_bias: whether the convolution has a bias.
        bias: whether the in- and out-projections have biases.
    """

    SSM_PARAMETERS = ("A_log", "dt_proj.weight", "dt_proj.bias", "x_proj.weight")
    NO_WEIGHT_DECAY = ("A_log", "D", "dt_proj.bias")

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | Literal["auto"] = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        scan_method: str = "auto",
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = _positive_int("d_model", d_model)
        self.d_state = _positive_int("d_state", d_state)
        self.d_conv = _positive_int("d_conv", d_conv)
        self.d_inner = _positive_int("expand", expand) * d_model
        self.dt_rank = (
            math.ceil(d_model / 16) if dt_rank == "auto" else _positive_int("dt_rank", dt_rank)
        )
        self.scan_method = scan_method
        e, n, r = self.d_inner, self.d_state, self.dt_rank

        self.in_proj = nn.Linear(d_model, 2 * e, bias=bias)
        self.conv1d = nn.Conv1d(
            e, e, kernel_size=d_conv, groups=e, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -(r**-0.5), r**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(s6_dt_bias_init(e, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(s6_A_log_init(e, n))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d_model, bias=bias)

        self._tag_parameters()

    def _tag_parameters(self) -> None:
        for name in self.SSM_PARAMETERS:
            self.get_parameter(name)._ssm_param = True
        for name in self.NO_WEIGHT_DECAY:
            self.get_parameter(name)._no_weight_decay = True

    def __setstate__(self, state: dict) -> None:
        # copy.deepcopy and unpickling rebuild parameters without their attributes: re-tag them
        super().__setstate__(state)
        self._tag_parameters()

    @property
    def A(self) -> Tensor:
        """The state matrix ``A = -exp(A_log)``, ``(D, N)``: negative, hence stable."""
        return -torch.exp(self.A_log)

    def selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The input-dependent parameters {eq}`s6-selection` of S6, before the softplus and bias.

        Args:
            u: the SSM input, ``(batch, D, L)``.

        Returns:
            ``(delta_raw, B, C)``: ``delta_raw = W_Δ (W_R u)`` of shape ``(batch, D, L)`` (the
            scan adds ``dt_proj.bias`` and applies ``softplus``), and ``B``, ``C`` of shape
            ``(batch, N, L)``.
        """
        projected = torch.einsum("bel,ke->bkl", u, self.x_proj.weight)  # (b, r + 2n, l)
        dt_low, B, C = torch.split(projected, [self.dt_rank, self.d_state, self.d_state], dim=1)
        delta_raw = torch.einsum("brl,er->bel", dt_low, self.dt_proj.weight)
        return delta_raw, B, C

    def delta(self, u: Tensor) -> Tensor:
        """The step sizes ``Δ = softplus(W_Δ (W_R u) + b_Δ)`` of an SSM input, ``(batch, D, L)``."""
        delta_raw, _, _ = self.selection(u)
        return F.softplus(delta_raw + self.dt_proj.bias[:, None])

    def _check_input(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise TypeError(
                f"x: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"x: expected shape (batch, L, d_model={self.d_model}), got {tuple(x.shape)}"
            )

    def ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The in-projection and causal convolution of {eq}`s6-block`.

        Args:
            x: ``(batch, L, d_model)``.

        Returns:
            ``(u_tilde, u, z)``, each ``(batch, D, L)``: the convolution input ``u_tilde``, the
            SSM input ``u = silu(conv(u_tilde))`` and the gate branch ``z``.
        """
        u_tilde, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (b, e, l) each
        u = F.silu(self.conv1d(u_tilde)[..., : x.shape[1]])  # keep the causal outputs
        return u_tilde, u, z

    def _scan(self, u: Tensor, z: Tensor, return_last_state: bool):
        delta_raw, B, C = self.selection(u)
        return selective_scan(
            u,
            delta_raw,
            self.A,
            B,
            C,
            D=self.D,
            z=z,
            delta_bias=self.dt_proj.bias,
            delta_softplus=True,
            return_last_state=return_last_state,
            method=self.scan_method,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Run a whole sequence: {eq}`s6-block`.

        Args:
            x: ``(batch, L, d_model)``, floating.

        Returns:
            ``(batch, L, d_model)``, same dtype.
        """
        self._check_input(x)
        _, u, z = self.ssm_inputs(x)
        y = self._scan(u, z, return_last_state=False)
        return self.out_proj(y.transpose(1, 2))

    def prefill(self, x: Tensor) -> tuple[Tensor, MambaCache]:
        """Run a prompt in parallel and return the cache that :meth:`step` continues from.

        Args:
            x: ``(batch, L, d_model)``.

        Returns:
            ``(y, (conv_state, ssm_state))`` with ``y`` ``(batch, L, d_model)``,
            ``conv_state`` ``(batch, D, d_conv)`` (the last ``d_conv`` convolution inputs, oldest
            first) and ``ssm_state`` ``(batch, D, N)`` (the state after the last token).
        """
        self._check_input(x)
        u_tilde, u, z = self.ssm_inputs(x)
        y, ssm_state = self._scan(u, z, return_last_state=True)
        conv_state = F.pad(u_tilde, (max(self.d_conv - x.shape[1], 0), 0))[..., -self.d_conv :]
        return self.out_proj(y.transpose(1, 2)), (conv_state, ssm_state)

    def allocate_cache(
        self, batch: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> MambaCache:
        """An empty (all-zero) cache for :meth:`step`.

        Returns ``(conv_state, ssm_state)`` of shapes ``(batch, D, d_conv)`` and
        ``(batch, D, N)``.

        ``device`` and ``dtype`` default to those of the block's parameters.
        """
        _positive_int("batch", batch)
        device = device if device is not None else self.A_log.device
        dtype = dtype if dtype is not None else self.A_log.dtype
        conv_state = torch.zeros(batch, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype)
        return conv_state, ssm_state

    def _check_cache(self, x_t: Tensor, cache: MambaCache) -> None:
        if not torch.is_tensor(x_t) or not x_t.is_floating_point():
            raise TypeError(
                "x_t: expected a floating-point tensor, "
                f"got {getattr(x_t, 'dtype', type(x_t).__name__)}"
            )
        if x_t.dim() != 2 or x_t.shape[-1] != self.d_model:
            raise ValueError(
                f"x_t: expected shape (batch, d_model={self.d_model}), got {tuple(x_t.shape)}"
            )
        if not isinstance(cache, tuple) or len(cache) != 2:
            raise TypeError(
                f"cache: expected a tuple (conv_state, ssm_state), got {type(cache).__name__}"
            )
        b = x_t.shape[0]
        expected = ((b, self.d_inner, self.d_conv), (b, self.d_inner, self.d_state))
        got = tuple(tuple(c.shape) for c in cache)
        if got != expected:
            raise ValueError(
                f"cache: expected shapes (conv_state, ssm_state) = {expected}, got {got}"
            )

    def step(self, x_t: Tensor, cache: MambaCache) -> tuple[Tensor, MambaCache]:
        """Process one token with the recurrence {eq}`s6-step`; returns a new cache.

        Nothing is updated in place, so the old cache stays valid.

        Args:
            x_t: one token, ``(batch, d_model)``.
            cache: ``(conv_state (batch, D, d_conv), ssm_state (batch, D, N))``.

        Returns:
            ``(y_t, cache)`` with ``y_t`` ``(batch, d_model)``.
        """
        self._check_cache(x_t, cache)
        conv_state, h = cache
        u_tilde, z = self.in_proj(x_t).chunk(2, dim=-1)  # (b, e) each
        conv_state = torch.cat([conv_state[..., 1:], u_tilde[..., None]], dim=-1)  # shift window
        u = torch.einsum("bew,ew->be", conv_state, self.conv1d.weight[:, 0, :])
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        delta_raw, B, C = (t[..., 0] for t in self.selection(u[..., None]))
        delta = F.softplus(delta_raw + self.dt_proj.bias)  # (b, e)
        A_bar = torch.exp(torch.einsum("be,en->ben", delta, self.A))
        h = A_bar * h + torch.einsum("be,bn,be->ben", delta, B, u)
        y = torch.einsum("ben,bn->be", h, C) + self.D * u
        y = y * F.silu(z)
        return self.out_proj(y), (conv_state, h)


class RMSNorm(nn.Module):
    """RMS normalisation {cite}`zhang2019rmsnorm`: ``x / sqrt(mean(x^2) + eps) * weight``.

    Args:
        d_model: size of the last dimension.
        eps: added to the mean square.
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(_positive_int("d_model", d_model)))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` of shape ``(..., d_model)``."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _make_norm(norm: str, d_model: int) -> nn.Module:
    if norm == "rms":
        return RMSNorm(d_model)
    if norm == "layer":
        return nn.LayerNorm(d_model)
    raise ValueError(f"norm: expected 'rms' or 'layer', got {norm!r}")


class MambaBlock(nn.Module):
    """A pre-norm residual Mamba block: ``x + Mamba(norm(x))`` ({eq}`s6-residual`).

    Args:
        d_model: width of the residual stream.
        norm: ``"rms"`` (RMSNorm, as in Mamba) or ``"layer"`` (LayerNorm).
        **mamba_kwargs: passed to :class:`Mamba`.
    """

    def __init__(self, d_model: int, norm: Literal["rms", "layer"] = "rms", **mamba_kwargs) -> None:
        super().__init__()
        self.norm = _make_norm(norm, d_model)
        self.mixer = Mamba(d_model, **mamba_kwargs)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, L, d_model) -> (batch, L, d_model)``."""
        return x + self.mixer(self.norm(x))

    def allocate_cache(self, batch: int, **kwargs) -> MambaCache:
        """The cache of the mixer, see :meth:`Mamba.allocate_cache`."""
        return self.mixer.allocate_cache(batch, **kwargs)

    def step(self, x_t: Tensor, cache: MambaCache) -> tuple[Tensor, MambaCache]:
        """One token ``(batch, d_model)`` through the residual block."""
        y_t, cache = self.mixer.step(self.norm(x_t), cache)
        return x_t + y_t, cache


class MambaStack(nn.Module):
    """``n_layers`` residual Mamba blocks followed by a final norm, as in Mamba's language model.

    Args:
        d_model: width of the residual stream.
        n_layers: number of blocks.
        norm: ``"rms"`` or ``"layer"``, for every block and the final norm.
        **mamba_kwargs: passed to every :class:`Mamba`.
    """

    def __init__(
        self, d_model: int, n_layers: int, norm: Literal["rms", "layer"] = "rms", **mamba_kwargs
    ) -> None:
        super().__init__()
        _positive_int("n_layers", n_layers)
        self.layers = nn.ModuleList(
            MambaBlock(d_model, norm=norm, **mamba_kwargs) for _ in range(n_layers)
        )
        self.norm_f = _make_norm(norm, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """``(batch, L, d_model) -> (batch, L, d_model)``."""
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)

    def allocate_cache(self, batch: int, **kwargs) -> list[MambaCache]:
        """One empty cache per layer."""
        return [layer.allocate_cache(batch, **kwargs) for layer in self.layers]

    def step(self, x_t: Tensor, cache: list[MambaCache]) -> tuple[Tensor, list[MambaCache]]:
        """One token ``(batch, d_model)`` through every layer; returns the output and new caches."""
        if not isinstance(cache, list) or len(cache) != len(self.layers):
            raise ValueError(
                f"cache: expected a list of {len(self.layers)} layer caches, "
                f"got {type(cache).__name__}"
            )
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x_t, layer_cache = layer.step(x_t, layer_cache)
            new_cache.append(layer_cache)
        return self.norm_f(x_t), new_cache

"""Chapters 3 and 4: trainable LTI layers (S4, S4D, DSS) and the block that wraps them.

Glossary of shapes: ``batch``; ``H`` channels, each an independent SSM with its own step
size; ``N`` state size, stored as ``N/2`` conjugate-pair modes; ``L`` sequence length.

Every layer maps ``u`` (batch, H, L) to ``y`` (batch, H, L) as ``y = K * u + D u`` with an FFT
convolution, and runs the same map one step at a time: ``state = layer.default_state(batch)``
then ``y_k, state = layer.step(u_k, state)`` with ``u_k`` (batch, H).

*SSM parameters* — ``log_dt`` (Δ), the eigenvalues (``log_neg_real``, ``imag``), ``P`` and
``B`` — are named in each layer's ``SSM_PARAMETERS`` and tagged with the attribute
``_ssm_param = True``; :func:`ssm_parameters` lists them (by name, so it also works on a
``copy.deepcopy``, which drops attributes of parameters) so that a trainer can give them a
smaller learning rate and no weight decay.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssm.conv import causal_conv
from ssm.discretize import discretize
from ssm.s4 import _check_even_N, dplr, dplr_bilinear, s4_kernel
from ssm.s4d import dss_kernel, s4d_init, s4d_kernel

__all__ = ["S4", "S4D", "DSS", "SequenceBlock", "ssm_parameters"]


def ssm_parameters(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The SSM parameters (Δ, A or Λ, P, B) of every S4/S4D/DSS layer inside ``module``.

    Read from each layer's ``SSM_PARAMETERS`` names; every parameter appears once.
    """
    found: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        for name in getattr(sub, "SSM_PARAMETERS", ()):
            param = getattr(sub, name)
            found[id(param)] = param
    return list(found.values())


def _ssm_param(value: Tensor) -> nn.Parameter:
    """A parameter tagged as an SSM parameter; complex values are stored as (..., 2) reals."""
    param = nn.Parameter(torch.view_as_real(value).clone() if value.is_complex() else value)
    param._ssm_param = True
    return param


def _complex_param(value: Tensor) -> nn.Parameter:
    """An untagged complex parameter, stored as (..., 2) reals (optimizers see real tensors)."""
    return nn.Parameter(torch.view_as_real(value).clone())


def _complex_dtype() -> torch.dtype:
    """The complex dtype that matches the default real dtype (complex64 for float32)."""
    return torch.complex(torch.zeros(0), torch.zeros(0)).dtype


def _pairs(x: Tensor) -> Tensor:
    """All ``N`` modes from the stored ``N/2``: ``[x, conj(x)]`` along the last dimension."""
    return torch.cat([x, x.conj()], dim=-1)


def _check_sizes(H: int, N: int, dt_min: float, dt_max: float) -> None:
    if isinstance(H, bool) or not isinstance(H, int) or H < 1:
        raise ValueError(f"H: expected a positive int number of channels, got {H!r}")
    _check_even_N(N)
    if not 0 < dt_min <= dt_max:
        raise ValueError(
            f"dt_min, dt_max: expected 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}"
        )


def _check_input(u: Tensor, H: int, shape: str = "(batch, H, L)") -> None:
    if not isinstance(u, Tensor):
        raise TypeError(f"u: expected a torch.Tensor, got {type(u).__name__}")
    if u.dim() != shape.count(",") + 1 or u.shape[1] != H:
        raise ValueError(f"u: expected shape {shape} with H = {H}, got {tuple(u.shape)}")


class _LTILayer(nn.Module):
    """What S4, S4D and DSS share: the step sizes, the ``D`` skip, the FFT convolution."""

    SSM_PARAMETERS: tuple[str, ...] = ("log_dt", "log_neg_real", "imag")

    def __init__(self, H: int, N: int, dt_min: float, dt_max: float) -> None:
        super().__init__()
        _check_sizes(H, N, dt_min, dt_max)
        self.H, self.N = H, N
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        self.log_dt = _ssm_param(log_dt)
        self.D = nn.Parameter(torch.randn(H))

    def _eigenvalues(self) -> Tensor:
        """The stored ``N/2`` eigenvalues ``-exp(log_neg_real) + i imag`` (real part < 0)."""
        return torch.complex(-torch.exp(self.log_neg_real), self.imag)

    def forward(self, u: Tensor) -> Tensor:
        """``y = K * u + D u``: ``u`` (batch, H, L) -> ``y`` (batch, H, L)."""
        _check_input(u, self.H)
        return causal_conv(u, self.kernel(u.shape[-1])) + self.D[:, None] * u


class S4(_LTILayer):
    """The S4 layer :cite:p:`gu2022s4`: a DPLR SSM per channel, kernel by Cauchy + Woodbury.

    ``A = diag(Lambda) - P P^*`` with ``Lambda``, ``P``, ``B`` initialised from
    :func:`ssm.s4.dplr` (HiPPO-LegS), ``C`` complex normal, ``log dt`` uniform in
    ``[log dt_min, log dt_max]``. The real parts of ``Lambda`` are ``-exp(log_neg_real) < 0``.
    SSM parameters (tagged ``_ssm_param``): ``log_dt``, ``log_neg_real``, ``imag``, ``P``, ``B``.

    Args:
        H: channels.
        N: even state size (``N/2`` conjugate-pair modes are stored).
        dt_min: smallest initial step size (> 0).
        dt_max: largest initial step size (>= dt_min).
    """

    SSM_PARAMETERS = ("log_dt", "log_neg_real", "imag", "P", "B")

    def __init__(self, H: int, N: int = 64, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__(H, N, dt_min, dt_max)
        Lambda, P, B = (x[: N // 2].repeat(H, 1) for x in dplr(N)[:3])
        dtype, cdtype = torch.get_default_dtype(), _complex_dtype()
        self.log_neg_real = _ssm_param(torch.log(-Lambda.real).to(dtype))
        self.imag = _ssm_param(Lambda.imag.to(dtype))
        self.P = _ssm_param(P.to(cdtype))
        self.B = _ssm_param(B.to(cdtype))
        self.C = _complex_param(torch.randn(H, N // 2, dtype=cdtype))

    def modes(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All ``N`` modes ``(Lambda, P, B, C)``, each (H, N), conjugate pairs."""
        return tuple(
            _pairs(x)
            for x in (
                self._eigenvalues(),
                torch.view_as_complex(self.P),
                torch.view_as_complex(self.B),
                torch.view_as_complex(self.C),
            )
        )

    def kernel(self, L: int) -> Tensor:
        """The S4 kernel (H, L) by :func:`ssm.s4.s4_kernel`, with gradients."""
        return s4_kernel(*self.modes(), torch.exp(self.log_dt), L, pairs=True)

    def default_state(self, batch: int) -> Tensor:
        """The zero state (batch, H, N), complex."""
        C = torch.view_as_complex(self.C)
        return torch.zeros(batch, self.H, self.N, dtype=C.dtype, device=C.device)

    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the discrete DPLR RNN, eq. (s4-dplr-bilinear).

        ``h_k = A_bar h_{k-1} + B_bar u_k``, ``y_k = Re(C h_k) + D u_k``; ``u_k`` (batch, H),
        ``state`` (batch, H, N) -> ``(y_k (batch, H), state)``.
        """
        _check_input(u_k, self.H, "(batch, H)")
        Lambda, P, B, C = self.modes()
        A_bar, B_bar = dplr_bilinear(Lambda, P, B, torch.exp(self.log_dt))
        state = torch.einsum("hnm,bhm->bhn", A_bar, state) + B_bar * u_k[..., None]
        return (C * state).sum(-1).real + self.D * u_k, state


class S4D(_LTILayer):
    """The S4D layer :cite:p:`gu2022s4d`: a diagonal SSM per channel, Vandermonde kernel.

    ``A`` from :func:`ssm.s4d.s4d_init` (``init``), ``B = 1``, ``C`` complex normal; ``N/2``
    conjugate-pair modes, ``K = 2 Re ...``. Real parts of ``A`` are ``-exp(log_neg_real) < 0``.
    SSM parameters (tagged ``_ssm_param``): ``log_dt``, ``log_neg_real``, ``imag``, ``B``.

    Args:
        H: channels.
        N: even state size (``N/2`` conjugate-pair modes are stored).
        dt_min: smallest initial step size (> 0).
        dt_max: largest initial step size (>= dt_min).
        init: ``"legs"``, ``"inv"`` or ``"lin"`` (:func:`ssm.s4d.s4d_init`).
        method: ``"zoh"`` or ``"bilinear"``.
    """

    SSM_PARAMETERS = ("log_dt", "log_neg_real", "imag", "B")

    def __init__(
        self,
        H: int,
        N: int = 64,
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        init: str = "lin",
        method: str = "zoh",
    ) -> None:
        super().__init__(H, N, dt_min, dt_max)
        if method not in ("zoh", "bilinear"):
            raise ValueError(f"method: expected 'zoh' or 'bilinear', got {method!r}")
        self.method = method
        A = s4d_init(N, init).repeat(H, 1)
        dtype = torch.get_default_dtype()
        self.log_neg_real = _ssm_param(torch.log(-A.real).to(dtype))
        self.imag = _ssm_param(A.imag.to(dtype))
        self.B = _ssm_param(torch.ones(H, N // 2, dtype=_complex_dtype()))
        self.C = _complex_param(torch.randn(H, N // 2, dtype=_complex_dtype()))

    def modes(self) -> tuple[Tensor, Tensor, Tensor]:
        """The ``N/2`` stored modes ``(A, B, C)``, each (H, N/2) complex."""
        return self._eigenvalues(), torch.view_as_complex(self.B), torch.view_as_complex(self.C)

    def kernel(self, L: int) -> Tensor:
        """The S4D kernel (H, L) by :func:`ssm.s4d.s4d_kernel`."""
        return s4d_kernel(*self.modes(), torch.exp(self.log_dt), L, self.method)

    def default_state(self, batch: int) -> Tensor:
        """The zero state (batch, H, N/2), complex."""
        C = torch.view_as_complex(self.C)
        return torch.zeros(batch, self.H, self.N // 2, dtype=C.dtype, device=C.device)

    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``h_k = A_bar h_{k-1} + B_bar u_k`` per mode, ``y_k = 2 Re(C h_k) + D u_k``.

        ``u_k`` (batch, H), ``state`` (batch, H, N/2) -> ``(y_k (batch, H), state)``.
        """
        _check_input(u_k, self.H, "(batch, H)")
        A, B, C = self.modes()
        A_bar, B_bar = discretize(A, B, torch.exp(self.log_dt), self.method)
        state = A_bar * state + B_bar * u_k[..., None]
        return 2 * (C * state).sum(-1).real + self.D * u_k, state


class DSS(_LTILayer):
    """The DSS-exp layer :cite:p:`gupta2022dss`: a diagonal SSM with a softmax-normalised kernel.

    ``Lambda`` from S4D-LegS, ``W`` complex normal; ``K = 2 Re[(W / Lambda) row-softmax]``
    (:func:`ssm.s4d.dss_kernel`). Real parts of ``Lambda`` are ``-exp(log_neg_real) < 0``.
    SSM parameters (tagged ``_ssm_param``): ``log_dt``, ``log_neg_real``, ``imag``.

    The normalisation runs over the sequence length, so the recurrent form depends on it:
    call :meth:`setup_step` with the length before :meth:`step`.

    Args:
        H: channels.
        N: even state size (``N/2`` conjugate-pair modes are stored).
        dt_min: smallest initial step size (> 0).
        dt_max: largest initial step size (>= dt_min).
    """

    def __init__(self, H: int, N: int = 64, dt_min: float = 0.001, dt_max: float = 0.1) -> None:
        super().__init__(H, N, dt_min, dt_max)
        Lambda = s4d_init(N, "legs").repeat(H, 1)
        dtype = torch.get_default_dtype()
        self.log_neg_real = _ssm_param(torch.log(-Lambda.real).to(dtype))
        self.imag = _ssm_param(Lambda.imag.to(dtype))
        self.W = _complex_param(torch.randn(H, N // 2, dtype=_complex_dtype()))
        self.step_length: int | None = None

    def kernel(self, L: int) -> Tensor:
        """The DSS-exp kernel (H, L) by :func:`ssm.s4d.dss_kernel`."""
        return dss_kernel(self._eigenvalues(), torch.view_as_complex(self.W), self.log_dt.exp(), L)

    def setup_step(self, L: int) -> None:
        """Fix the length ``L`` over which the recurrent form's kernel is normalised."""
        if isinstance(L, bool) or not isinstance(L, int) or L < 1:
            raise ValueError(f"L: expected a positive int sequence length, got {L!r}")
        self.step_length = L

    def default_state(self, batch: int) -> Tensor:
        """The zero state (batch, H, N/2), complex."""
        W = torch.view_as_complex(self.W)
        return torch.zeros(batch, self.H, self.N // 2, dtype=W.dtype, device=W.device)

    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """``h_k = exp(dt Lambda) h_{k-1} + u_k``, ``y_k = 2 Re(C h_k) + D u_k`` with
        ``C = W (exp(dt Lambda) - 1) / (Lambda (exp(L dt Lambda) - 1))``, eq. (s4d-dss-step).

        ``u_k`` (batch, H), ``state`` (batch, H, N/2) -> ``(y_k (batch, H), state)``.
        """
        if self.step_length is None:
            raise RuntimeError("DSS.step: call setup_step(L) first (the kernel depends on L)")
        _check_input(u_k, self.H, "(batch, H)")
        Lambda, dt = self._eigenvalues(), torch.exp(self.log_dt)[:, None]
        A_bar = torch.exp(dt * Lambda)
        C = torch.view_as_complex(self.W) * torch.expm1(dt * Lambda)
        C = C / (Lambda * torch.expm1(self.step_length * dt * Lambda))
        state = A_bar * state + u_k[..., None]
        return 2 * (C * state).sum(-1).real + self.D * u_k, state


class SequenceBlock(nn.Module):
    """Norm, SSM layer, GELU, GLU output projection, dropout and residual, on (batch, H, L).

    ``prenorm=True``: ``y = u + Dropout(GLU(W Dropout(GELU(layer(LayerNorm(u))))))``;
    ``prenorm=False`` applies the LayerNorm after the residual instead. ``W`` maps ``H`` to
    ``2H`` and the GLU :cite:p:`dauphin2017glu` halves it back.

    Args:
        H: channels.
        layer: any module mapping (batch, H, L) to (batch, H, L); :meth:`step` also needs its
            ``step`` and ``default_state``.
        dropout: probability in [0, 1).
        prenorm: where the LayerNorm goes.
    """

    def __init__(
        self, H: int, layer: torch.nn.Module, dropout: float = 0.0, prenorm: bool = True
    ) -> None:
        super().__init__()
        if isinstance(H, bool) or not isinstance(H, int) or H < 1:
            raise ValueError(f"H: expected a positive int number of channels, got {H!r}")
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer: expected an nn.Module, got {type(layer).__name__}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.H, self.layer, self.prenorm = H, layer, prenorm
        self.norm = nn.LayerNorm(H)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(H, 2 * H)

    def _mix(self, z: Tensor) -> Tensor:
        """GELU, dropout, ``H -> 2H`` projection and GLU on channels-last ``z`` (..., H)."""
        return self.dropout(F.glu(self.output(self.dropout(F.gelu(z))), dim=-1))

    def forward(self, u: Tensor) -> Tensor:
        """``u`` (batch, H, L) -> ``y`` (batch, H, L)."""
        _check_input(u, self.H)
        z = self.norm(u.transpose(1, 2)).transpose(1, 2) if self.prenorm else u
        y = u + self._mix(self.layer(z).transpose(1, 2)).transpose(1, 2)
        return y if self.prenorm else self.norm(y.transpose(1, 2)).transpose(1, 2)

    def default_state(self, batch: int) -> Tensor:
        """The wrapped layer's zero state."""
        return self.layer.default_state(batch)

    def step(self, u_k: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step: ``u_k`` (batch, H) -> ``(y_k (batch, H), state)``, equal to :meth:`forward`."""
        _check_input(u_k, self.H, "(batch, H)")
        z = self.norm(u_k) if self.prenorm else u_k
        z, state = self.layer.step(z, state)
        y = u_k + self._mix(z)
        return (y if self.prenorm else self.norm(y)), state

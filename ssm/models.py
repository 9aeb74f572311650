"""Task models for chapter 8: encoder -> a stack of residual blocks -> decoder.

Shape glossary: ``b`` batch, ``L`` length, ``F`` input features, ``d`` model width,
``V`` vocabulary, ``O`` outputs.

Every backbone sees the same ``(b, L, d)`` sequence and returns the same shape, so the task
decides only the encoder (token embedding or linear map of ``F`` features), the readout
(every position, the last one, or the mean over time) and the decoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "BACKBONES",
    "SequenceModel",
    "make_block",
    "ConvBlock",
    "GRUBlock",
    "TransformerBlock",
    "ChannelsFirst",
    "sinusoidal_positions",
    "count_parameters",
    "width_for_budget",
]

BACKBONES = ("s4", "s4d", "dss", "s6", "conv", "gru", "transformer")
"""Backbone names accepted by :class:`SequenceModel` (the CLI's MODEL argument)."""

READOUTS = ("all", "last", "mean")


class ConvBlock(nn.Module):
    """Pre-norm residual block of a causal depthwise convolution and a pointwise GLU MLP.

    ``y = x + W_2 GLU(W_1 DWConv_k(LN(x)))`` on ``(b, L, d)``; the convolution sees ``k`` steps
    of the past, so a stack of ``n`` blocks sees ``n (k - 1) + 1`` steps.
    """

    def __init__(self, d: int, kernel_size: int = 9, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel_size, groups=d, padding=kernel_size - 1)
        self.mix = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, L, d) -> (b, L, d)``."""
        L = x.shape[1]
        z = self.conv(self.norm(x).transpose(1, 2))[..., :L].transpose(1, 2)
        return x + self.drop(self.out(nn.functional.glu(self.mix(z), dim=-1)))


class GRUBlock(nn.Module):
    """Pre-norm residual GRU :cite:p:`cho2014gru`: ``y = x + GRU(LN(x))`` on ``(b, L, d)``."""

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, L, d) -> (b, L, d)``."""
        return x + self.drop(self.gru(self.norm(x))[0])


class TransformerBlock(nn.Module):
    """Pre-norm causal self-attention block :cite:p:`vaswani2017attention` with a GELU MLP."""

    def __init__(self, d: int, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        heads = n_heads if d % n_heads == 0 else 1
        self.layer = nn.TransformerEncoderLayer(
            d, heads, 2 * d, dropout, activation="gelu", batch_first=True, norm_first=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, L, d) -> (b, L, d)``; position ``t`` attends to positions ``<= t`` only."""
        L = x.shape[1]
        mask = torch.triu(torch.full((L, L), float("-inf"), device=x.device), diagonal=1)
        return self.layer(x, src_mask=mask, is_causal=True)


def sinusoidal_positions(L: int, d: int) -> torch.Tensor:
    """Fixed positions ``PE[t, 2i] = sin(t / 10000^{2i/d})``, ``PE[t, 2i+1] = cos(.)``: ``(L, d)``.

    Fixed rather than learned, so that the transformer can be run on longer sequences than it
    was trained on.
    """
    t = torch.arange(L, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(L, d)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)[:, : d // 2]
    return pe


class ChannelsFirst(nn.Module):
    """Run a block written for ``(b, d, L)`` (the LTI layers' layout) on ``(b, L, d)``."""

    def __init__(self, block: torch.nn.Module):
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, L, d) -> (b, L, d)``."""
        return self.block(x.transpose(1, 2)).transpose(1, 2)


def make_block(
    backbone: str, d: int, d_state: int, dropout: float, scan_method: str = "sequential"
) -> torch.nn.Module:
    """One residual block of ``backbone`` of width ``d`` acting on ``(b, L, d)``.

    ``scan_method`` is the S6 scan (``ssm.selective_scan``'s ``method``); the default, the
    sequential loop, is the fastest on a CPU for the short sequences of chapter 8.
    """
    if backbone in ("s4", "s4d", "dss"):
        from ssm import layers

        cls = {"s4": layers.S4, "s4d": layers.S4D, "dss": layers.DSS}[backbone]
        return ChannelsFirst(layers.SequenceBlock(d, cls(d, N=d_state), dropout=dropout))
    if backbone == "s6":
        from ssm.mamba import MambaBlock

        return MambaBlock(d, d_state=d_state, scan_method=scan_method)
    if backbone == "conv":
        return ConvBlock(d, dropout=dropout)
    if backbone == "gru":
        return GRUBlock(d, dropout=dropout)
    return TransformerBlock(d, dropout=dropout)


class SequenceModel(nn.Module):
    """Encoder -> ``n_layers`` residual blocks of one backbone -> norm -> decoder.

    Args:
        backbone: one of :data:`BACKBONES`.
        d_input: vocabulary size ``V`` if ``tokens`` else the number of input features ``F``.
        d_output: number of outputs ``O`` per scored position.
        d_model: width ``d``; ``n_layers``: depth; ``d_state``: state size ``N`` of the SSMs.
        readout: ``"all"`` scores every position, ``"last"`` the last one, ``"mean"`` the mean
            over time.
        tokens: inputs are ``int64`` tokens ``(b, L)`` (embedded) instead of floats ``(b, L, F)``.
        dropout: dropout rate inside the blocks; ``scan_method``: see :func:`make_block`.

    ``forward(x)`` returns ``(b, L, O)`` for ``readout="all"``, else ``(b, O)``.
    """

    def __init__(
        self,
        backbone: str,
        d_input: int,
        d_output: int,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 16,
        readout: str = "all",
        tokens: bool = False,
        dropout: float = 0.0,
        scan_method: str = "sequential",
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone: expected one of {', '.join(BACKBONES)}, got {backbone!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout: expected one of {', '.join(READOUTS)}, got {readout!r}")
        for name, value in (
            ("d_input", d_input),
            ("d_output", d_output),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("d_state", d_state),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.backbone, self.readout, self.tokens, self.d_model = backbone, readout, tokens, d_model
        self.encoder = nn.Embedding(d_input, d_model) if tokens else nn.Linear(d_input, d_model)
        self.blocks = nn.ModuleList(
            make_block(backbone, d_model, d_state, dropout, scan_method) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, d_output)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        if self.tokens and (x.dim() != 2 or x.dtype != torch.long):
            raise ValueError(
                f"x: expected int64 tokens of shape (b, L), got {x.dtype} {tuple(x.shape)}"
            )
        if not self.tokens and (x.dim() != 3 or x.shape[-1] != self.encoder.in_features):
            raise ValueError(
                f"x: expected shape (b, L, {self.encoder.in_features}), got {tuple(x.shape)}"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised output of the last block, ``(b, L, d)``."""
        self._check_input(x)
        z = self.encoder(x)
        if self.backbone == "transformer":
            z = z + sinusoidal_positions(z.shape[1], self.d_model).to(z)
        for block in self.blocks:
            z = block(z)
        return self.norm(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``(b, L, O)`` (readout ``"all"``) or ``(b, O)`` for inputs ``x``."""
        z = self.features(x)
        if self.readout == "last":
            z = z[:, -1]
        elif self.readout == "mean":
            z = z.mean(dim=1)
        return self.decoder(z)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars (a complex parameter counts as two)."""
    return sum(
        p.numel() * (2 if p.is_complex() else 1) for p in model.parameters() if p.requires_grad
    )


def width_for_budget(backbone: str, budget: int, step: int = 4, **kwargs) -> int:
    """The width ``d`` (a multiple of ``step``) whose model has the parameter count closest to
    ``budget``; ``kwargs`` are the other :class:`SequenceModel` arguments. Used to compare
    backbones at equal size."""
    best, best_gap = step, None
    for d in range(step, 1025, step):
        n = count_parameters(SequenceModel(backbone, d_model=d, **kwargs))
        gap = abs(n - budget)
        if best_gap is None or gap < best_gap:
            best, best_gap = d, gap
        if n > budget:
            break
    return best

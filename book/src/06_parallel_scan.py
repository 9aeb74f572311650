# %% [markdown]
# # 6. Parallel scans
#
# Chapter 5 lost the convolution: once $\Delta$, $B$ and $C$ depend on the input, S6 can only
# be computed by running its recurrence. Per channel $d$ and state coordinate $n$, the
# selective scan is
#
# $$
# h_t = \exp(\Delta_t A)\, h_{t-1} + \Delta_t B_t\, u_t, \qquad
# y_t = \sum_n C_{t,n}\, h_{t,n} + D\, u_t ,
# $$ (scan-selective)
#
# with $h_{-1} = 0$. Strip away what is specific to S6 and one equation is left: the
# **linear recurrence**
#
# $$
# h_t = a_t\, h_{t-1} + b_t, \qquad t = 0, \dots, L-1, \qquad h_{-1} = 0,
# $$ (scan-recurrence)
#
# where $a_t$ and $b_t$ are numbers (real or complex) given for every step — here
# $a_t = \exp(\Delta_t A)$ and $b_t = \Delta_t B_t u_t$. Written as a loop, step $t$ waits for
# step $t-1$: $L$ steps one after another, however many processors we have. This chapter
# shows that {eq}`scan-recurrence` is a *scan* — a prefix "sum" under an associative
# operator — and can therefore be computed in $O(\log L)$ parallel steps
# {cite}`blelloch1990prefix`, {cite}`martin2018parallelizing`. Then we derive its backward
# pass, which turns out to be a scan too, and measure what all of this buys on a CPU.

# %%
import inspect
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import ssm
from ssm.scan import (
    LinearScanFn,
    SelectiveScanFn,
    _auto_method,
    reverse_scan,
    scan_blelloch,
    scan_chunked,
    scan_hillis_steele,
    scan_sequential,
)

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## The sequential loop, and a trap
#
# The reference implementation is the loop itself. It iterates over `unbind(-1)` — a tuple
# of views, one per time step — and stacks the states once at the end:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: scan_sequential
# ```
#
# A random recurrence with $|a_t| \in (0.5, 1)$ checks it against the closed form obtained by
# unrolling {eq}`scan-recurrence`, $h_t = \sum_{s \le t} \big(\prod_{s < r \le t} a_r\big) b_s$,
# which needs no loop over states at all:

# %%
def random_ab(shape, dtype=torch.float64, seed=0):
    """|a| uniform in (0.5, 1) with a random sign, b standard normal."""
    g = torch.Generator().manual_seed(seed)
    a = (0.5 + 0.5 * torch.rand(shape, generator=g)) * torch.sign(torch.randn(shape, generator=g))
    return a.to(dtype), torch.randn(shape, generator=g).to(dtype)


a, b = random_ab((3, 50))
L = a.shape[-1]
prod = torch.ones(3, L, L)  # prod[:, t, s] = a_{s+1} ... a_t for s <= t
for t in range(L):
    for s in range(t):
        prod[:, t, s] = torch.prod(a[:, s + 1 : t + 1], dim=-1)
closed = (torch.tril(prod) * b[:, None, :]).sum(-1)
err = (scan_sequential(a, b) - closed).abs().max().item()
assert err < 1e-12
print("max |loop - closed form| < 1e-12 (float64 rounding)")

# %% [markdown]
# How the loop stores its states matters more than one would guess. A natural alternative
# preallocates `h = torch.zeros(..., L)` and writes `h[..., t] = a[..., t] * h[..., t-1] + ...`.
# It computes the same numbers, but every in-place write bumps the version of the whole
# tensor `h`, and autograd must keep (and in the backward, copy) the whole tensor for every
# step: the backward becomes $O(L^2)$. We time the backward of both loops on 256 independent
# recurrences:

# %%
def indexed_loop(a, b):
    """The trap: states written in place into one preallocated tensor."""
    h = torch.zeros_like(b)
    h[..., 0] = b[..., 0]
    for t in range(1, b.shape[-1]):
        h[..., t] = a[..., t] * h[..., t - 1].clone() + b[..., t]
    return h


def backward_time(loop, length, repeats=3):
    a, b = random_ab((256, length), torch.float32, seed=length)
    b.requires_grad_(True)
    best = math.inf
    for _ in range(repeats):
        h = loop(a, b)
        start = time.perf_counter()
        h.backward(torch.ones_like(h))
        best = min(best, time.perf_counter() - start)
    return best


trap = {}
for length in (128, 512, 1024):
    trap[length] = backward_time(indexed_loop, length) / backward_time(scan_sequential, length)

# %%
# NBVAL_IGNORE_OUTPUT
for length, ratio in trap.items():
    print(f"L = {length:5d}: backward of the indexed loop is {ratio:6.1f}x slower")

# %% [markdown]
# The ratio itself depends on the machine, but it grows with $L$, as a quadratic cost over
# a linear one must; at $L = 1024$ it is more than five times slower, and typically far more.
# Everything below is compared with the *well-written* loop.

# %%
assert trap[1024] > trap[128] and trap[1024] > 5

# %% [markdown]
# ## The scan operator
#
# Represent step $t$ by the pair $(a_t, b_t)$: the affine map $h \mapsto a_t h + b_t$.
# Applying first the map of step $s$ and then that of step $t$ gives
# $a_t (a_s h + b_s) + b_t = (a_s a_t) h + (a_t b_s + b_t)$ — again an affine map. This
# composition is the operator
#
# $$
# (a_1, b_1) \bullet (a_2, b_2) = (a_1 a_2,\; a_2 b_1 + b_2),
# $$ (scan-operator)
#
# and $h_t$ is the second component of $(a_0, b_0) \bullet (a_1, b_1) \bullet \dots \bullet
# (a_t, b_t)$: applied to $h_{-1} = 0$, the composed map returns its offset. The identity
# element is $(1, 0)$, the map that changes nothing.
#
# **Associativity.** A parallel algorithm may group the products any way it likes only if
# $\bullet$ is associative. Compute both groupings of three elements:
#
# $$
# \begin{aligned}
# \big((a_1, b_1) \bullet (a_2, b_2)\big) \bullet (a_3, b_3)
#   &= (a_1 a_2,\; a_2 b_1 + b_2) \bullet (a_3, b_3)
#    = (a_1 a_2 a_3,\; a_3 a_2 b_1 + a_3 b_2 + b_3), \\
# (a_1, b_1) \bullet \big((a_2, b_2) \bullet (a_3, b_3)\big)
#   &= (a_1, b_1) \bullet (a_2 a_3,\; a_3 b_2 + b_3)
#    = (a_1 a_2 a_3,\; a_2 a_3 b_1 + a_3 b_2 + b_3).
# \end{aligned}
# $$
#
# The two agree because multiplication of numbers is commutative and associative. (The
# operator is *not* commutative: $(a_1, b_1) \bullet (a_2, b_2) \ne (a_2, b_2) \bullet
# (a_1, b_1)$ in general, so a scan must keep the order of the elements.) A numerical check
# with complex numbers:

# %%
def combine(x, y):
    """The operator (scan-operator) on pairs (a, b)."""
    return x[0] * y[0], y[0] * x[1] + y[1]


g = torch.Generator().manual_seed(1)
e1, e2, e3 = [tuple(torch.randn(1000, dtype=torch.complex128, generator=g) for _ in "ab") for _ in range(3)]
left, right = combine(combine(e1, e2), e3), combine(e1, combine(e2, e3))
assoc_err = max((left[i] - right[i]).abs().max().item() for i in range(2))
swap_gap = (combine(e1, e2)[1] - combine(e2, e1)[1]).abs().max().item()
assert assoc_err < 1e-12 and swap_gap > 1
print(f"associativity error < 1e-12; commuted operands differ by up to {swap_gap:.2f}")

# %% [markdown]
# ## Three parallel scans, drawn
#
# We draw each algorithm as the list of pairs *(source, destination)* it combines at each
# level: at every level all pairs are independent and can run at the same time. The
# **depth** is the number of levels, the **work** the number of combines. To be sure that the
# drawings are right, each is *executed* on numbers and compared with the loop.

# %%
def hillis_steele_levels(L):
    """Level k: every t >= 2^k combines with t - 2^k (all at once, from the old values)."""
    levels, offset = [], 1
    while offset < L:
        levels.append(("level", [(t - offset, t) for t in range(offset, L)]))
        offset *= 2
    return levels


def blelloch_levels(L):
    """Up-sweep builds totals of blocks of 2^(k+1); down-sweep fills the rest in."""
    depth = max(1, math.ceil(math.log2(L)))
    up = [
        ("up", [(i + 2**k - 1, i + 2 ** (k + 1) - 1) for i in range(0, L, 2 ** (k + 1)) if i + 2 ** (k + 1) - 1 < L])
        for k in range(depth)
    ]
    down = [
        ("down", [(2**k * 2 * i - 1, 2**k * (2 * i + 1) - 1) for i in range(1, L) if 2**k * (2 * i + 1) - 1 < L])
        for k in reversed(range(depth - 1))
    ]
    return [level for level in up + down if level[1]]


def chunked_levels(L, c):
    """Scan inside chunks of c (all chunks at once), carry across chunk ends, fix up."""
    n = math.ceil(L / c)
    inside = [("chunk", [(k * c + j - 1, k * c + j) for k in range(n) if k * c + j < L]) for j in range(1, c)]
    carry = [("carry", [((k - 1) * c + c - 1, min(k * c + c - 1, L - 1))]) for k in range(1, n)]
    fix = [("fix-up", [(k * c - 1, k * c + j) for k in range(1, n) for j in range(c - 1) if k * c + j < min(k * c + c - 1, L - 1)])]
    return [level for level in inside + carry + fix if level[1]]


def run_levels(levels, a, b):
    """Execute a drawing: dst <- src • dst, all pairs of a level from the previous values."""
    x = [(a[t], b[t]) for t in range(len(a))]
    for _, pairs in levels:
        new = list(x)
        for src, dst in pairs:
            new[dst] = combine(x[src], x[dst])
        x = new
    return torch.stack([xb for _, xb in x])


def draw(levels, L, title, ax):
    for depth, (kind, pairs) in enumerate(levels):
        color = {"up": "C0", "down": "C1", "level": "C0", "chunk": "C0", "carry": "C3", "fix-up": "C1"}[kind]
        for src, dst in pairs:
            ax.annotate("", (dst, depth + 1), (src, depth), arrowprops={"arrowstyle": "->", "color": color, "lw": 1})
        ax.scatter(range(L), [depth] * L, s=12, color="0.6", zorder=3)
    ax.scatter(range(L), [len(levels)] * L, s=12, color="k", zorder=3)
    ax.set(title=title, xlabel="time step t", ylabel="level", xticks=range(L), yticks=range(len(levels) + 1))
    ax.set_ylim(len(levels) + 0.5, -0.5)
    ax.grid(False)


for L_check in (1, 2, 3, 7, 8, 13, 16, 100):
    a, b = random_ab(L_check, seed=L_check)
    ref = scan_sequential(a, b)
    for levels in (hillis_steele_levels(L_check), blelloch_levels(L_check), chunked_levels(L_check, 4)):
        assert torch.allclose(run_levels(levels, a, b), ref, atol=1e-12)

fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
draw(hillis_steele_levels(8), 8, "Hillis–Steele", axes[0])
draw(blelloch_levels(8), 8, "Blelloch (up-sweep blue, down-sweep orange)", axes[1])
draw(chunked_levels(8, 4), 8, "Chunked, c = 4 (carry red, fix-up orange)", axes[2])
plt.tight_layout()
plt.show()

# %% [markdown]
# All three drawings, executed pair by pair, reproduce the loop for $L \in \{1, 2, 3, 7, 8,
# 13, 16, 100\}$ (the assert above).
#
# **Hillis–Steele** {cite}`hillis1986data` (left): at level $k$ every element $t \ge 2^k$
# combines with the element $2^k$ steps before it, so after level $k$ element $t$ holds the
# composition of the last $2^{k+1}$ steps. After $\lceil \log_2 L \rceil$ levels it holds all
# of them. Minimal depth, but every level touches almost every element: work
# $O(L \log L)$.
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: scan_hillis_steele
# ```
#
# **Blelloch** {cite}`blelloch1990prefix` (middle) is work-efficient. The *up-sweep* combines
# neighbours pairwise, then pairs of pairs, … — a reduction tree whose nodes hold the
# totals of blocks of $2, 4, 8, \dots$ steps. The *down-sweep* walks back down and completes
# every position that is not yet a prefix from the totals to its left. Each sweep does fewer
# than $L$ combines: work $O(L)$, depth $2 \log_2 L$. Written recursively, one level of the
# recursion is one up-sweep level (combine pairs $(2i, 2i+1)$, halving the sequence) followed,
# after the recursive call has produced the states at odd positions, by one down-sweep level
# (the even positions):
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: scan_blelloch
# ```
#
# **Chunked** (right) is the two-level structure of GPU kernels. Cut time into chunks of $c$
# steps. (1) Scan inside every chunk from a zero state — all chunks at once, which is where
# the parallelism is. (2) Scan the chunk *totals*: chunk $k$ as a whole is the map
# $(P_k, \tilde h_k)$ with $P_k$ the product of its $a$'s and $\tilde h_k$ its last local
# state; scanning these gives the state $h_{\text{in},k}$ entering each chunk. (3) Fix up:
# unrolling {eq}`scan-recurrence` inside a chunk that starts from $h_{\text{in}}$ instead of
# $0$ adds one term,
#
# $$
# h_t = \tilde h_t + \Big(\prod_{s \in \text{chunk},\, s \le t} a_s\Big)\, h_{\text{in}},
# $$ (scan-chunk-fixup)
#
# where $\tilde h_t$ is the local state. On a GPU a chunk is what one block of threads holds in
# fast memory; on a CPU step (1) turns $L$ tiny operations into $c$ operations on tensors $L/c$
# times larger.
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: scan_chunked
# ```
#
# Non-powers of two need no special case: Blelloch pads with the identity $(1, 0)$ — which
# changes no state — and the chunked scan pads its last chunk the same way:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: _identity_pad
# ```

# %%
for L_check in (1, 2, 3, 7, 100, 1000, 1023, 1025):
    for dtype in (torch.float64, torch.complex128):
        a, b = random_ab((4, L_check), seed=L_check)
        if dtype.is_complex:
            a = a * torch.exp(1j * torch.rand(4, L_check))
            b = b.to(dtype)
        ref = scan_sequential(a, b)
        for scan in (scan_hillis_steele, scan_blelloch, scan_chunked):
            torch.testing.assert_close(scan(a, b), ref, rtol=1e-12, atol=1e-12)
print("Hillis–Steele, Blelloch and chunked match the loop for L in {1, 2, 3, 7, 100, 1000, 1023, 1025}")

# %% [markdown]
# ### Work and depth
#
# Counting the pairs of the drawings gives the work, counting their levels the depth. For
# $L = 1024$ and chunks of $c = 32 = \sqrt{L}$:

# %%
L_table = 1024
table = {
    "sequential": (L_table - 1, L_table - 1),
    "Hillis–Steele": hillis_steele_levels(L_table),
    "Blelloch": blelloch_levels(L_table),
    "chunked (c = 32)": chunked_levels(L_table, 32),
}
print(f"{'algorithm':18s} {'work (combines)':>16s} {'depth (levels)':>15s}")
counts = {}
for name, levels in table.items():
    work, depth = levels if isinstance(levels, tuple) else (sum(len(p) for _, p in levels), len(levels))
    counts[name] = (work, depth)
    print(f"{name:18s} {work:16d} {depth:15d}")
log_L = int(math.log2(L_table))
assert counts["Hillis–Steele"] == (L_table * log_L - (L_table - 1), log_L)
assert counts["Blelloch"] == (2 * L_table - 2 - log_L, 2 * log_L - 1)
assert counts["chunked (c = 32)"][1] == 31 + 31 + 1 and counts["chunked (c = 32)"][0] < 2 * L_table

# %% [markdown]
# | algorithm | work | depth |
# |---|---|---|
# | sequential loop | $L - 1$ | $L - 1$ |
# | Hillis–Steele | $L \log_2 L - (L - 1)$ | $\log_2 L$ |
# | Blelloch | $2L - 2 - \log_2 L$ | $2 \log_2 L - 1$ |
# | chunked, chunk $c$ | $< 2L$ | $(c - 1) + (L/c - 1) + 1$, i.e. $\approx 2\sqrt L$ for $c = \sqrt L$ |
#
# The printed counts match these formulas exactly (asserted above for $L = 1024$). With $p$
# processors the time is about $\max(\text{work}/p, \text{depth})$: Hillis–Steele wins only
# when $p \gtrsim L$; with few processors the extra $\log L$ factor of work costs more than the
# depth saves. The chunked scan has a larger depth, but its levels are *wide* — on a CPU a
# level is one vectorised tensor operation, so what matters is the number of levels times the
# cost of launching one, plus the total memory traffic.
#
# ## Why not a cumulative sum?
#
# There is a tempting shortcut. Dividing {eq}`scan-recurrence` by $P_t = \prod_{s \le t} a_s$
# gives $h_t / P_t = h_{t-1}/P_{t-1} + b_t / P_t$, so
#
# $$
# h_t = P_t \sum_{s \le t} \frac{b_s}{P_s}, \qquad P_t = \exp\Big(\sum_{s \le t} \log a_s\Big):
# $$ (scan-cumsum-trick)
#
# two cumulative sums, which every library has. It is exact in exact arithmetic and a
# disaster in floating point: $P_t$ decays geometrically, so $1/P_s$ grows geometrically and
# leaves the range of float32 ($\approx 10^{38}$) after a few hundred steps; before that, the
# rounding error of $\log P_t$, which grows with $t$, is amplified by the exponential. We
# compare it, in float32, with the float64 loop:

# %%
def cumsum_trick(a, b):
    """Eq. (scan-cumsum-trick): an illustration of what NOT to do (a > 0 here)."""
    log_P = torch.cumsum(torch.log(a), -1)
    return torch.exp(log_P) * torch.cumsum(b * torch.exp(-log_P), -1)


lengths = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
errors = {"cumsum trick": [], "chunked scan": [], "Blelloch scan": []}
for L_err in lengths:
    a, b = random_ab((64, L_err), seed=L_err)
    a = a.abs()  # the logarithm needs a > 0
    ref = scan_sequential(a, b)  # float64
    a32, b32 = a.float(), b.float()
    for name, f in (("cumsum trick", cumsum_trick), ("chunked scan", scan_chunked), ("Blelloch scan", scan_blelloch)):
        err = (f(a32, b32).double() - ref).abs().max().item()
        errors[name].append(err if math.isfinite(err) else 1e30)

fig, ax = plt.subplots()
for name, errs in errors.items():
    ax.loglog(lengths, errs, "o-", label=name)
ax.axhline(1.0, color="0.5", ls=":")
ax.set(xlabel="sequence length L", ylabel="max |error| vs float64 loop", title="float32 accuracy (inf/NaN drawn at 1e30)")
ax.legend()
plt.show()
for L_err, e_trick, e_chunk in zip(lengths, errors["cumsum trick"], errors["chunked scan"], strict=True):
    print(f"L = {L_err:5d}: cumsum trick {e_trick:8.1e}   chunked scan {e_chunk:8.1e}")

# %%
assert errors["cumsum trick"][lengths.index(32)] < 1e-3
assert errors["cumsum trick"][lengths.index(256)] > 10 * errors["cumsum trick"][lengths.index(16)]
assert all(e >= 1e30 for e in errors["cumsum trick"][lengths.index(1024) :])
assert max(errors["chunked scan"]) < 1e-4 and max(errors["Blelloch scan"]) < 1e-4

# %% [markdown]
# Up to a few dozen steps the trick looks fine. Its error then grows steadily — more than
# tenfold from $L = 16$ to $L = 256$ — and once $1/P_s$ overflows the states are `inf` or
# `NaN`: for every $L \ge 1024$ in this example. Meanwhile the scans built from
# {eq}`scan-operator` stay within $10^{-4}$ of the float64 loop at every length: they only
# ever multiply numbers of modulus below one and add states of ordinary size. (Working in
# log-space with `logcumsumexp` {cite}`heinsen2023parallel` fixes the overflow for positive
# $a$ and $b$, but needs complex logarithms for signed inputs.)
#
# ## The backward pass is a scan too
#
# Training needs $\partial \mathcal L / \partial a_t$ and $\partial \mathcal L / \partial b_t$
# for a loss $\mathcal L$ that depends on all states. Let $g_t = \partial \mathcal L /
# \partial h_t$ be the gradient that arrives *directly* at $h_t$ (from $y_t$), and $G_t$ the
# *total* gradient of $h_t$, which also counts its influence on later states. Since $h_t$
# enters the future only through $h_{t+1} = a_{t+1} h_t + b_{t+1}$, the chain rule gives the
# **adjoint recurrence**
#
# $$
# G_t = g_t + a_{t+1}\, G_{t+1}, \qquad G_{L-1} = g_{L-1},
# $$ (scan-adjoint)
#
# which is {eq}`scan-recurrence` run backwards in time with coefficients $a_{t+1}$: the same
# scan, on reversed inputs. From $G$, since $h_t$ depends on $a_t$ and $b_t$ through
# $a_t h_{t-1} + b_t$,
#
# $$
# \frac{\partial \mathcal L}{\partial b_t} = G_t, \qquad
# \frac{\partial \mathcal L}{\partial a_t} = G_t\, h_{t-1}.
# $$ (scan-grads)
#
# **Complex numbers need conjugates.** Write $z^*$ for the complex conjugate of $z$. For complex
# $a, b$ and a real loss, PyTorch's gradient of a complex tensor $z$ is the conjugate Wirtinger derivative $\partial \mathcal L / \partial
# z^*$. The chain rule through a holomorphic map $w = f(z)$ reads
# $\partial \mathcal L / \partial z^* = f'(z)^*\; \partial \mathcal L / \partial
# w^*$: every local derivative enters *conjugated*. Our maps are $h_{t+1} = a_{t+1} h_t +
# b_{t+1}$ (derivative $a_{t+1}$ with respect to $h_t$) and $h_t = a_t h_{t-1} + b_t$
# (derivatives $h_{t-1}$ and $1$ with respect to $a_t$, $b_t$), so the complex versions of
# {eq}`scan-adjoint` and {eq}`scan-grads` are
#
# $$
# G_t = g_t + a^*_{t+1}\, G_{t+1}, \qquad
# \frac{\partial \mathcal L}{\partial b^*_t} = G_t, \qquad
# \frac{\partial \mathcal L}{\partial a^*_t} = G_t\, h^*_{t-1},
# $$
#
# and for real inputs the stars change nothing. Forgetting them is a known bug of published
# scan code; it is invisible in real arithmetic and wrong in complex arithmetic, as we show
# below. The package's reverse scan and its `torch.autograd.Function`:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: reverse_scan
# ```
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: LinearScanFn
# ```
#
# The forward saves only its inputs $a$ and $b$; the backward recomputes the states with one
# more scan instead of keeping them. `ssm.linear_scan` uses this Function for every parallel
# method:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: linear_scan
# ```
#
# `torch.autograd.gradcheck` compares the analytic backward with finite differences, in
# float64 and complex128:

# %%
for dtype in (torch.float64, torch.complex128):
    for method in ("hillis_steele", "blelloch", "chunked"):
        a, b = random_ab((2, 9), seed=3)
        if dtype.is_complex:
            a = (a * torch.exp(1j * torch.rand(2, 9))).requires_grad_(True)
            b = (b * torch.exp(1j * torch.rand(2, 9))).requires_grad_(True)
        else:
            a, b = a.requires_grad_(True), b.requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x, y, m=method: LinearScanFn.apply(x, y, m), (a, b))
print("gradcheck passes for all three methods in float64 and complex128")

# %% [markdown]
# And against autograd *through the loop*, with a random upstream gradient (a `.sum()` loss
# would feed the same gradient to every state and hide errors that depend on $t$). Next to it,
# the same backward written without the conjugates:

# %%
def backward_without_conjugates(a, b, grad_h):
    """(scan-adjoint) and (scan-grads) with the conjugates forgotten: an illustration of the bug."""
    G = scan_sequential(torch.cat([a[..., 1:], torch.zeros_like(a[..., :1])], -1).flip(-1), grad_h.flip(-1)).flip(-1)
    h_prev = torch.cat([torch.zeros_like(b[..., :1]), scan_sequential(a, b)[..., :-1]], -1)
    return G * h_prev, G


for dtype in (torch.float64, torch.complex128):
    a, b = random_ab((8, 300), seed=4)
    grad_h = torch.randn(8, 300)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.rand(8, 300))
        b, grad_h = b * torch.exp(1j * torch.rand(8, 300)), grad_h * torch.exp(1j * torch.rand(8, 300))
    a.requires_grad_(True)
    b.requires_grad_(True)
    ref = torch.autograd.grad(scan_sequential(a, b), (a, b), grad_h)
    ours = torch.autograd.grad(ssm.linear_scan(a, b, method="chunked"), (a, b), grad_h)
    naive = backward_without_conjugates(a.detach(), b.detach(), grad_h)
    err_ours = max((x - y).abs().max().item() for x, y in zip(ours, ref, strict=True))
    err_naive = max((x - y).abs().max().item() for x, y in zip(naive, ref, strict=True))
    print(f"{str(dtype):16s} derived backward error {err_ours:.1e}   without conjugates {err_naive:.1e}")
    assert err_ours < 1e-10
    assert (err_naive < 1e-10) if not dtype.is_complex else (err_naive > 0.1)

# %% [markdown]
# In real arithmetic both agree with autograd to rounding; in complex arithmetic only the
# derived backward does — the conjugate-free one is off by order one.
#
# ## The selective scan: gradients and memory
#
# For S6 the scan's coefficients are built from the layer's inputs:
# $a_t = \bar A_t = \exp(X_t)$ with $X_t = \Delta_t A$, and $b_t = \Delta_t B_t u_t$, for every
# batch element, channel $d$ and state coordinate $n$. With $g^y_t = \partial \mathcal L /
# \partial y_t$, the direct gradient of the state is $g_t = g^y_t\, C^*_t$ (the sum over $n$
# in $y_t$ copies $g^y_t$ to every $n$), the adjoint $G_t$ follows from {eq}`scan-adjoint`, and
# the chain rule through $\exp$ and the products gives
#
# $$
# \begin{aligned}
# \frac{\partial \mathcal L}{\partial C^*_t} &= \sum_d g^y_t\, h^*_t, &
# \frac{\partial \mathcal L}{\partial X^*_t} &= G_t\, h^*_{t-1}\, \exp(X_t)^*, &
# \frac{\partial \mathcal L}{\partial A^*} &= \sum_{t} \Delta_t\, \frac{\partial \mathcal L}{\partial X^*_t}, \\
# \frac{\partial \mathcal L}{\partial B^*_t} &= \sum_d \Delta_t u_t\, G_t, &
# \frac{\partial \mathcal L}{\partial u_t} &= \Delta_t \operatorname{Re} \sum_n G_t B^*_t, &
# \frac{\partial \mathcal L}{\partial \Delta_t} &= \operatorname{Re} \sum_n \Big(
#     A^*\, \frac{\partial \mathcal L}{\partial X^*_t} + u_t\, G_t B^*_t \Big),
# \end{aligned}
# $$ (scan-selective-grads)
#
# with sums over the batch as well where a tensor is shared by it ($A$; $B$, $C$ of shape
# $(D, N)$). For complex $A$ the read-out is $y_t = 2 \operatorname{Re} \sum_n C_t h_t$, as in
# `mamba_ssm`, which doubles $g_t$ and $\partial \mathcal L / \partial C^*_t$. The skip
# $D u_t$, the gate $\operatorname{silu}(z_t)$, the bias and the softplus on $\Delta$ are cheap
# elementwise operations on $(\text{batch}, D, L)$ tensors and are left to autograd.
#
# A straightforward implementation builds $\bar A$ and $\Delta B u$ for all time steps —
# tensors of shape $(\text{batch}, D, N, L)$, $N$ times larger than the input — and scans them.
# The sequential loop does worse: autograd keeps several $(\text{batch}, D, N)$ tensors *per
# step*. The package's `chunked` method instead walks through time in blocks of $T$ steps:
# inside a block it forms $\bar A$ and $\Delta B u$ for that block only, scans them (with the
# chunked scan above), reads out $y$ and keeps only the state leaving the block. The backward
# walks the blocks from last to first: it recomputes the block's states from the state that
# entered it, runs the adjoint recurrence inside the block — the gradient flowing in from later
# blocks enters as $a^*_{t+1} G_{t+1}$ at the block's last step — and accumulates
# {eq}`scan-selective-grads`. Only the inputs and one state per block are saved:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: SelectiveScanFn
# ```
#
# Each block's backward is one function, {eq}`scan-selective-grads` line by line:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: _backward_block
# ```
#
# `ssm.selective_scan` has the signature of `mamba_ssm`'s `selective_scan_fn` and chooses the
# method:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: selective_scan
# ```
#
# We check the blocked backward (with blocks of 3 steps, so that the carry between blocks is
# exercised) with `gradcheck`, for selective and shared $B$, $C$ and for real and complex $A$:

# %%
def s6_inputs(batch=1, dim=2, n=3, length=8, variable=True, complex_a=False, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(batch, dim, length, generator=g))
    A = -torch.rand(dim, n, generator=g) - 0.5
    if complex_a:
        A = torch.complex(A, torch.randn(dim, n, generator=g))
    shape = (batch, n, length) if variable else (dim, n)
    B = torch.randn(*shape, generator=g, dtype=A.dtype)
    C = torch.randn(*shape, generator=g, dtype=A.dtype)
    return [x.to(dtype if not x.is_complex() else x.dtype) for x in (u, delta, A, B, C)]


for variable in (True, False):
    for complex_a in (False, True):
        inputs = [x.requires_grad_(True) for x in s6_inputs(variable=variable, complex_a=complex_a)]
        assert torch.autograd.gradcheck(lambda *x: SelectiveScanFn.apply(*x, 3, "chunked"), inputs)
print("gradcheck passes: selective and shared B, C; real and complex A")

# %% [markdown]
# and every method of `ssm.selective_scan`, with $D$, $z$, the bias and the softplus on, against
# autograd through the sequential loop with random upstream gradients for $y$ and for the last
# state, at a length that spans several blocks:

# %%
u, delta, A, B, C = s6_inputs(batch=2, dim=4, n=8, length=700, seed=5)
g = torch.Generator().manual_seed(6)
D_skip, z, bias = torch.randn(4, generator=g), torch.randn(2, 4, 700, generator=g), torch.randn(4, generator=g)
params = [x.requires_grad_(True) for x in (u, delta, A, B, C, D_skip, z, bias)]
grad_y, grad_last = torch.randn(2, 4, 700, generator=g), torch.randn(2, 4, 8, generator=g)


def s6_grads(method):
    y, last = ssm.selective_scan(*params, delta_softplus=True, return_last_state=True, method=method)
    return [y, last, *torch.autograd.grad((y, last), params, (grad_y, grad_last))]


reference = s6_grads("sequential")
for method in ("hillis_steele", "blelloch", "chunked"):
    err = max((x - y).abs().max().item() for x, y in zip(s6_grads(method), reference, strict=True))
    assert err < 1e-10
    print(f"{method:14s} max error of y, last state and 8 gradients < 1e-10")

# %% [markdown]
# What autograd keeps for the backward is what costs memory. We count the bytes of the
# tensors saved for backward in the benchmark setting of the next section (batch 2, $D = 64$,
# $N = 16$, $L = 1024$, float32), with a hook on every saved tensor:

# %%
def saved_mib(method, length=1024):
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 64, length, generator=g, dtype=torch.float32), torch.rand(2, 64, length, generator=g, dtype=torch.float32)
    A = -torch.arange(1.0, 17.0, dtype=torch.float32).repeat(64, 1)
    B, C = torch.randn(2, 16, length, generator=g, dtype=torch.float32), torch.randn(2, 16, length, generator=g, dtype=torch.float32)
    inputs = [x.requires_grad_(True) for x in (u, delta, A, B, C)]
    seen = {}

    def pack(x):
        seen[(x.data_ptr(), x.numel())] = x.numel() * x.element_size()
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        ssm.selective_scan(*inputs, method=method)
    return sum(seen.values()) / 2**20


saved = {m: saved_mib(m) for m in ("sequential", "blelloch", "chunked")}
one_state_tensor = 2 * 64 * 16 * 1024 * 4 / 2**20
for m, mib in saved.items():
    print(f"{m:11s} saves {mib:6.1f} MiB for backward ({mib / one_state_tensor:4.1f} x one (batch, D, N, L) tensor)")
assert saved["chunked"] < one_state_tensor / 4
assert saved["sequential"] > 2 * one_state_tensor and saved["blelloch"] > 3 * one_state_tensor

# %% [markdown]
# The loop saves more than two $(\text{batch}, D, N, L)$ tensors' worth (one state and one
# $\bar A_t$ per step), the materialised Blelloch scan more than three (its two scan inputs,
# the states for the read-out, the exponential), and the blocked scan less than a quarter of a
# single one: its inputs, of shapes $(\text{batch}, D, L)$ and $(\text{batch}, N, L)$, and one
# state per block. (Peak memory also counts what lives only during the forward or the
# backward; the benchmark below measures it.)
#
# ## Measured on this machine
#
# The benchmark `python -m benchmarks` (also `make bench`) times every method of
# `ssm.selective_scan` in the setting of issue 5 — float32, batch 2, $D = 64$, $N = 16$,
# selective $B$ and $C$ — for $L$ from 256 to 16 384, forward and forward + backward, and
# measures the peak memory of forward + backward (growth of the process's peak resident
# memory, each method and length in a fresh process). The machine that produced the committed
# results was shared with other jobs, which made wall-clock times swing tenfold. The benchmark
# therefore reports the *CPU time* of the process with one PyTorch thread — barely disturbed
# by other processes — as the minimum over repeated runs with all methods interleaved, and we
# read *ratios* to the sequential loop. (One thread is conservative for the parallel methods:
# only their large tensor operations could use a second core.) The chapter plots the
# committed JSON rather than re-measuring:

# %%
bench = json.loads((Path(ssm.__file__).parents[1] / "benchmarks" / "results" / "cpu_scan.json").read_text())
res, ratio = bench["results"], bench["ratios_vs_sequential"]
style = {"sequential": "k-o", "hillis_steele": "C2-s", "blelloch": "C0-^", "chunked": "C3-D", "indexed_loop": "C7-x"}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
for m, per_L in res.items():
    Ls = sorted(int(k) for k in per_L)
    for ax, key in zip(axes, ("forward_s", "forward_backward_s", "peak_mib"), strict=True):
        ax.loglog(Ls, [per_L[str(k)][key] for k in Ls], style[m], label=m, base=2)
titles = ("forward, CPU s", "forward + backward, CPU s", "peak memory of fwd+bwd, MiB")
for ax, title in zip(axes, titles, strict=True):
    ax.set(title=title, xlabel="L")
axes[0].legend()
plt.tight_layout()
plt.show()
print(f"{'method':13s} {'L':>6s} {'fwd speed-up':>13s} {'fwd+bwd speed-up':>17s} {'memory / loop':>14s}")
for m, per_L in ratio.items():
    for k in sorted(per_L, key=int):
        r = per_L[k]
        print(f"{m:13s} {k:>6s} {r['speedup_forward']:13.2f} {r['speedup_forward_backward']:17.2f} {r['memory_fraction']:14.2f}")

# %%
chunked, blelloch = ratio["chunked"], ratio["blelloch"]
for k in ("1024", "4096"):
    assert chunked[k]["speedup_forward_backward"] >= 1.5
    assert chunked[k]["speedup_forward_backward"] >= blelloch[k]["speedup_forward_backward"]
    assert chunked[k]["memory_fraction"] <= 0.5
    assert chunked[k]["memory_fraction"] < blelloch[k]["memory_fraction"] / 4
assert all(r["speedup_forward_backward"] < 1 for r in ratio["hillis_steele"].values())
assert chunked["16384"]["speedup_forward_backward"] >= 4
assert res["blelloch"]["16384"]["peak_mib"] > 8 * res["chunked"]["16384"]["peak_mib"]
assert ratio["indexed_loop"]["256"]["speedup_forward_backward"] < 0.6
assert bench["auto_on_cpu"] == "chunked"

# %% [markdown]
# What the numbers say (each statement is asserted in the cell above, from the committed
# results):
#
# - The blocked `chunked` scan — which `method="auto"` picks on a CPU at this size — runs forward +
#   backward at least 1.5 times faster than the well-written loop at $L = 1024$ and
#   $L = 4096$, at least as fast as Blelloch over materialised tensors (the approach of
#   mamba.py's `pscan`), with at most half of the loop's peak memory and less than a quarter
#   of Blelloch's. Its advantage grows with $L$: at $L = 16\,384$ it is at least 4 times
#   faster than the loop, and Blelloch needs more than 8 times its memory. The indexed loop is
#   nearly twice as slow as the good loop already at $L = 256$, and its quadratic backward
#   makes the gap grow with $L$ (the first section of this chapter).
# - Hillis–Steele is slower than the loop at every length despite its minimal depth: on a
#   CPU, depth is not the bottleneck. Every one of its $\log_2 L$ levels streams
#   $(\text{batch}, D, N, L)$ tensors through memory; the extra $\log L$ factor of work is
#   paid in full.
# - The speed-ups are modest. A CPU core runs one operation at a time: what the parallel
#   scans save on a CPU is the *per-operation overhead* of Python and PyTorch — $L$ tiny
#   operations on $\text{batch} \cdot D \cdot N = 2048$ elements become a few hundred
#   operations on larger tensors — not arithmetic. Memory traffic then dominates, and the
#   work-efficient, blocked algorithm wins.
# - A GPU inverts the balance: thousands of threads make the depth $O(\log L)$ matter, and
#   launching one kernel per time step would waste nearly all of them. But the memory lesson
#   carries over and is sharper: writing $(\text{batch}, D, N, L)$ tensors to GPU main memory
#   is exactly what a fast selective scan avoids, by keeping a chunk's states in on-chip memory
#   and recomputing them in the backward — the blocked structure above, as one fused kernel.
#   That is the subject of chapter 7.
#
# ### When the loop wins
#
# All of the above is at $\text{batch} \cdot D \cdot N = 2048$ state elements per time step.
# Every line of the blocked scan's block functions streams a $(\text{batch}, D, N, 64)$
# tensor through memory. Once those tensors outgrow the CPU's caches, and the loop's per-step
# operations are large enough that Python's overhead no longer matters, the loop is faster.
# We time forward + backward of both on one thread, for a small state (batch 2, $D = 64$,
# $N = 16$: 2048 elements, $L = 1024$) and a large one (batch 32, $D = 80$, $N = 16$:
# 40 960 elements, the size of a training batch in chapter 8, $L = 256$):

# %%
# NBVAL_IGNORE_OUTPUT
def scan_inputs(batch, dim, n, length):
    g, f32 = torch.Generator().manual_seed(0), torch.float32  # float32, as in training
    u, delta = (torch.randn(batch, dim, length, generator=g, dtype=f32) for _ in range(2))
    A = -torch.rand(dim, n, generator=g, dtype=f32)
    B, C = (torch.randn(batch, n, length, generator=g, dtype=f32) for _ in range(2))
    return [x.requires_grad_() for x in (u, delta, A, B, C)]


def forward_backward(inputs, method):
    y = ssm.selective_scan(*inputs, delta_softplus=True, method=method)
    y.backward(torch.ones_like(y))


threads = torch.get_num_threads()
torch.set_num_threads(1)
crossover = {}
for shape in [(2, 64, 16, 1024), (32, 80, 16, 256)]:
    inputs = scan_inputs(*shape)
    crossover[shape] = {m: ssm.best_time(lambda m=m: forward_backward(inputs, m), repeats=3) for m in ("sequential", "chunked")}
    t = crossover[shape]
    print(f"(batch, D, N, L) = {shape}: loop {1e3 * t['sequential']:.0f} ms, chunked {1e3 * t['chunked']:.0f} ms")
torch.set_num_threads(threads)

# %%
small, large = crossover.values()
assert small["chunked"] < small["sequential"]
assert large["sequential"] < large["chunked"]
assert _auto_method(torch.device("cpu"), False, 2 * 64 * 16) == "chunked"
assert _auto_method(torch.device("cpu"), False, 32 * 80 * 16) == "sequential"
print("small state: chunked is faster; large state: the loop is faster; auto picks each")

# %% [markdown]
# `method="auto"` follows this measurement. On a CPU it picks the blocked scan for states of up
# to `CPU_CHUNKED_MAX_STATE` elements and the loop above that:
#
# ```{literalinclude} ../ssm/scan.py
# :pyobject: _auto_method
# ```
#
# The threshold, 4096 elements, lies between the two sizes measured above. Where exactly the two
# methods break even depends on the CPU's cache sizes, so read it as a rule of thumb. The blocked scan's memory advantage holds at every size: pass
# `method="chunked"` explicitly when memory, not time, is the constraint.
#
# ### A fused path
#
# What remains of the blocked scan's cost is one PyTorch operation per line of the block
# functions, each streaming a $(\text{batch}, D, N, 64)$ tensor through memory.
# `method="compiled"` hands the two block functions to `torch.compile`, whose Inductor backend
# fuses them into C++ loops, compiled once per block shape. The same benchmark command measures
# it against the loop and the uncompiled scan (`benchmarks/results/cpu_scan_compiled.json`):

# %%
fused = json.loads((Path(ssm.__file__).parents[1] / "benchmarks" / "results" / "cpu_scan_compiled.json").read_text())
for m, per_L in fused["results"].items():
    for k, r in per_L.items():
        print(f"{m:11s} L = {k:5s} forward + backward {r['forward_backward_s']:.3f} CPU s, {r['speedup_forward_backward']:.2f}x the loop")
print(f"one-off compile (empty cache): {fused['compile_s']:.0f} s")
comp, unfused = fused["results"]["compiled"], fused["results"]["chunked"]
assert comp["4096"]["speedup_forward_backward"] >= 4
assert all(comp[k]["forward_backward_s"] < unfused[k]["forward_backward_s"] for k in comp)
assert 10 < fused["compile_s"] < 120

# %% [markdown]
# Fused, the blocked scan is at least four times faster than the loop at $L = 4096$ and faster
# than the unfused version at every measured length — but only after a one-off compilation of
# tens of seconds, which is why `method="auto"` does not choose it: it pays off for training,
# not for a single call.


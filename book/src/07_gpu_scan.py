# %% [markdown]
# # 7. Scans on GPUs
#
# Chapter 6 turned the selective scan into an associative scan and showed that its work can be
# spread over $\log L$ parallel steps. On a GPU that is not yet speed: a parallel scan written
# with PyTorch operations writes every intermediate state to the GPU's main memory and reads it
# back, and main memory, not arithmetic, is what limits a scan. This chapter derives what a fast
# implementation must do — *fuse* the whole scan into one kernel that keeps the state on chip,
# walk along time in *chunks*, and *recompute* states in the backward pass instead of storing
# them — and builds it in Triton {cite}`tillet2019triton`, forward and backward.
#
# This page is executed on a CPU. The same kernels then run through the **Triton
# interpreter**, which executes the kernel code with NumPy on the host: it is slow and shows
# only that the code is *correct*; speed needs a GPU. A separate check compiles the kernels
# for real NVIDIA GPUs (without needing one), so the GPU path is not only plausible but built.
#
# Shapes follow Mamba: `u`, `delta` are `(batch, D, L)`, `A` is `(D, N)`, `B`, `C` are
# `(batch, N, L)` (or `(D, N)`), and the state $h$ of one channel has $N$ entries. The
# interpreter must be switched on (`TRITON_INTERPRET=1`) *before* Triton is first imported,
# because `@triton.jit` reads the variable when a kernel is defined; `ssm.triton_scan` does
# that itself when there is no GPU, so the first thing we import is that module.

# %%
%matplotlib inline
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ssm
from ssm import triton_scan  # sets TRITON_INTERPRET=1 before importing triton, when there is no GPU

ssm.seed_everything(0)
ssm.set_plot_style()
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CPU_RESULTS = "../benchmarks/results/cpu_scan.json"  # written by `python -m benchmarks`
print(f"GPU available: {torch.cuda.is_available()}; Triton interpreter: {triton_scan.interpreter_enabled()}")

# %% [markdown]
# ## Where the time goes: bytes, not flops
#
# For one batch element and one channel, the selective scan of chapter 5 is, state entry by
# state entry ($n = 1, \dots, N$),
#
# $$
# h_t = \bar A_t \odot h_{t-1} + \bar B_t\, u_t, \qquad
# \bar A_t = \exp(\Delta_t A), \quad \bar B_t = \Delta_t B_t, \qquad
# y_t = C_t^\top h_t + D\, u_t ,
# $$ (gpu-recurrence)
#
# with $h_{-1} = 0$, $\Delta_t > 0$ the step size, $A \in \mathbb{R}^N$ (negative) the
# channel's row of `A`, and $B_t, C_t \in \mathbb{R}^N$. Each of the $bDLN$ state entries
# costs one exponential and about six floating-point operations; $b$ is the batch size.
#
# A GPU has two kinds of memory that matter here. **HBM** (high-bandwidth memory, the
# "GPU memory" of the datasheet) is large — 80 to 141 GB — and reached at
# 3.35 TB/s on an H100 SXM {cite}`nvidia2022h100` and 4.8 TB/s on an H200
# {cite}`nvidia2024h200`. **On-chip memory** — registers and SRAM (shared memory), a few
# hundred kilobytes per streaming multiprocessor — is an order of magnitude faster but tiny;
# FlashAttention {cite}`dao2022flashattention` made this split the organising idea of fast
# attention kernels, and it is ours too. A kernel that reads and writes $M$ bytes of HBM cannot
# finish in less than
#
# $$
# t \;\ge\; \frac{M}{\text{HBM bandwidth}} ,
# $$ (gpu-roofline)
#
# the memory roof of the roofline model {cite}`williams2009roofline`. The arithmetic roof is
# far away: an H100 SXM computes 67 TFLOP/s in float32 without tensor cores
# {cite}`nvidia2022h100`, 20 flops per byte of HBM traffic, while the scans below do less than
# one (unfused) or about eight (fused). So $M$ decides the speed.
#
# **Unfused.** A scan written with PyTorch operations (chapter 6) runs one kernel per
# operation, and each kernel's result goes to HBM: $\bar A$ and $\bar B u$ are materialised as
# `(batch, D, L, N)` tensors, a scan reads both and writes the states $h$, and the read-out
# $y_t = C_t^\top h_t$ reads $h$ again. Counting four bytes per float32 entry, at least
#
# $$
# M_\text{unfused} \;\ge\; 4\,\big(6\, bDLN + 3\, bDL\big)
# $$ (gpu-bytes-naive)
#
# bytes move — and a Blelloch or Hillis–Steele scan makes $O(\log L)$ passes, not one.
#
# **Fused.** One kernel reads $u$ and $\Delta$, reads $B$ and $C$ once, forms $\bar A_t$ and
# $\bar B_t u_t$ in registers, scans, contracts with $C_t$ and writes only $y$. The
# `(batch, D, L, N)` state never touches HBM; only the state at the start of each chunk of $T$
# steps is saved for the backward pass (next sections):
#
# $$
# M_\text{fused} = 4\,\big(3\, bDL + 2\, bNL + bDN\,(\lceil L/T \rceil + 1)\big).
# $$ (gpu-bytes-fused)
#
# The package counts both:
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: fused_scan_bytes
# ```
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: materialised_scan_bytes
# ```
#
# At the benchmark setting of this chapter — batch 8, $D = 1024$, $N = 16$, float32 — the
# roofline bounds {eq}`gpu-roofline` are:

# %%
BANDWIDTH = {"H100 SXM": 3.35e12, "H200": 4.8e12}  # bytes/s, NVIDIA datasheets
batch, dim, dstate = 8, 1024, 16
print(f"{'L':>5} {'unfused MB':>11} {'fused MB':>9} {'ratio':>6}   lower bound on time (us), fused / unfused")
ratios = []
for L in (512, 2048, 8192):
    unfused = triton_scan.materialised_scan_bytes(batch, dim, L, dstate)
    fused = triton_scan.fused_scan_bytes(batch, dim, L, dstate, chunk_size=64)
    ratios.append(unfused / fused)
    bounds = "  ".join(f"{gpu}: {fused / bw * 1e6:6.1f} / {unfused / bw * 1e6:7.1f}" for gpu, bw in BANDWIDTH.items())
    print(f"{L:>5} {unfused / 1e6:11.0f} {fused / 1e6:9.1f} {unfused / fused:6.1f}   {bounds}")
assert all(25 < r < 32 for r in ratios)
fused_2048 = triton_scan.fused_scan_bytes(batch, dim, 2048, dstate, chunk_size=64) / BANDWIDTH["H100 SXM"]
unfused_2048 = triton_scan.materialised_scan_bytes(batch, dim, 2048, dstate) / BANDWIDTH["H100 SXM"]
assert 60e-6 < fused_2048 < 70e-6 and 1.9e-3 < unfused_2048 < 2.1e-3
flops = 6 * batch * dim * 2048 * dstate  # about six flops per state entry (and one exp)
intensity_fused = flops / triton_scan.fused_scan_bytes(batch, dim, 2048, dstate, chunk_size=64)
intensity_unfused = flops / triton_scan.materialised_scan_bytes(batch, dim, 2048, dstate)
print(f"flops per HBM byte at L = 2048: unfused {intensity_unfused:.2f}, fused {intensity_fused:.1f}; H100 SXM ridge: {67e12 / 3.35e12:.0f}")
assert intensity_unfused < 1 and 7 < intensity_fused < 9 < 20

lengths = [2**k for k in range(8, 15)]
fig, ax = plt.subplots()
for label, count in [
    ("unfused, eq. (gpu-bytes-naive)", lambda L: triton_scan.materialised_scan_bytes(batch, dim, L, dstate)),
    ("fused, eq. (gpu-bytes-fused)", lambda L: triton_scan.fused_scan_bytes(batch, dim, L, dstate, chunk_size=64)),
]:
    ax.loglog(lengths, [count(L) / BANDWIDTH["H100 SXM"] * 1e6 for L in lengths], "o-", label=label)
ax.set(xlabel="sequence length $L$", ylabel="time bound on an H100 SXM (us)", title="memory roof of the forward scan (batch 8, D 1024, N 16)")
ax.legend()
plt.show()

# %% [markdown]
# Fusion cuts the traffic by 25 to 32× (about $2N = 32$: the unfused scan moves six
# `(batch, D, L, N)` tensors where the fused one moves about three `(batch, D, L)` tensors). At
# $L = 2048$ the fused forward cannot take less than about 66 µs on an H100 SXM; the unfused
# one not less than about 2 ms, however well each of its kernels is written.
#
# ## Chunks, and the state carried between them
#
# A GPU runs a kernel as a grid of *programs* (thread blocks). Ours has one program per batch
# element and block of `BLOCK_D` channels; all $N$ state entries of those channels live in the
# program's registers. Along time, a program cannot hold all $L$ steps at once, so it walks
# through them in chunks of $T$ = `BLOCK_L` steps. Write each step of {eq}`gpu-recurrence` as
# the pair $(a_t, b_t) = (\bar A_t, \bar B_t u_t)$. Chapter 6's operator on pairs,
#
# $$
# (a, b) \bullet (a', b') = (a\,a',\; a' b + b'),
# $$ (gpu-combine)
#
# is associative, and applying the pairs of steps $s..t$ to a state is one pair. Within a chunk
# starting at step $s$, an inclusive scan of the chunk's pairs gives
# $(a^*_t, b^*_t) = (a_s, b_s) \bullet \cdots \bullet (a_t, b_t)$, and then
#
# $$
# h_t = a^*_t\, h_{s-1} + b^*_t ,
# $$ (gpu-chunk-carry)
#
# so only the last state of a chunk, $h_{s+T-1}$, is carried to the next chunk — in registers.
# In Triton the scan of a chunk is one call, `tl.associative_scan((a, b), axis, combine)`, with
# the operator written as a function of two pairs:
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: _combine
# ```
#
# The last chunk is usually partial ($L$ need not be a multiple of $T$). Padded steps are
# loaded with $\Delta = 0$, which makes their pair $(e^0, 0) = (1, 0)$, the identity of
# {eq}`gpu-combine`: they leave the state unchanged, so the state after the padded chunk is
# still $h_{L-1}$.
#
# ### A second formulation: segment sums
#
# Because $\bar A_t = \exp(\Delta_t A)$, products of $\bar A$ are exponentials of sums. With the
# cumulative sums $S_t = \sum_{r=s}^{t} \Delta_r A$ inside a chunk, unrolling
# {eq}`gpu-recurrence` gives
#
# $$
# h_t = e^{S_t}\, h_{s-1} + \sum_{r=s}^{t} e^{S_t - S_r}\, \bar B_r u_r ,
# $$ (gpu-segsum)
#
# a masked `(T, T)` matrix of weights per state entry, applied like a matrix product — the
# form Mamba-2 builds on {cite}`dao2024mamba2`. Since $A < 0$ and $\Delta > 0$, every exponent
# $S_t - S_r$ with $r \le t$ is $\le 0$, so nothing overflows — *provided* the entries with
# $r > t$ are masked to $-\infty$ **before** the exponential. Masking after it computes
# $e^{S_t - S_r}$ for $r > t$, a large positive exponent, and $\infty \cdot 0$ is NaN. Both
# variants, as a throwaway illustration on one channel with a chunk of 64 steps, in float32
# (whose exponential overflows above $e^{88.7}$) like the kernels:

# %%
T, N = 64, 4
g = torch.Generator().manual_seed(1)
dA = -(0.5 + torch.rand(T, N, generator=g)) * 2.0  # Delta_t * A, (T, N)
bu = torch.randn(T, N, generator=g)  # B_bar_t u_t, (T, N)
h_prev = torch.randn(N, generator=g)

h, loop = h_prev, []
for t in range(T):
    h = torch.exp(dA[t]) * h + bu[t]
    loop.append(h)
loop = torch.stack(loop)

S = dA.cumsum(0)  # (T, N)
diff = S[:, None, :] - S[None, :, :]  # S_t - S_r, (T, T, N)
causal = torch.ones(T, T, dtype=torch.bool).tril()[:, :, None]
weights = torch.exp(diff.masked_fill(~causal, float("-inf")))  # mask, then exponentiate
segsum = torch.exp(S) * h_prev + (weights * bu[None, :, :]).sum(1)
torch.testing.assert_close(segsum, loop, rtol=1e-5, atol=1e-5)  # float32, sums of <= 64 terms

weights_late = torch.exp(diff) * causal  # exponentiate, then mask: overflows above the diagonal
segsum_late = torch.exp(S) * h_prev + (weights_late * bu[None, :, :]).sum(1)
print(f"largest exponent above the diagonal: {diff.max():.1f}")
print(f"mask before exp: all finite = {bool(segsum.isfinite().all())}")
print(f"mask after exp:  all finite = {bool(segsum_late.isfinite().all())}")
assert segsum.isfinite().all() and not segsum_late.isfinite().all()

# %% [markdown]
# Per state entry, the segment-sum form does $O(T^2)$ work per chunk where the scan does
# $O(T)$; on a GPU it pays when the sum over $r$ can become a matrix product on tensor cores,
# which needs a decay shared by all $N$ entries (Mamba-2's scalar $A$). With S6's diagonal
# $A$ each state entry decays differently, so our kernels use the associative scan. (Under the
# interpreter the balance differs: `tl.associative_scan` with a Python combine function runs as
# a Python loop over the elements, while the segment-sum form is a few vectorised NumPy calls.)
#
# ## The forward kernel
#
# In the kernel, capitalised names are pointers to HBM and lower-case names are tiles in
# registers; each load says its tile shape. The program loads its rows of `A` once, then for
# each chunk: stores the state at the chunk's start (for the backward pass), loads `u`,
# `delta` and the chunk of `B`, `C`, forms the pairs in a `(BLOCK_D, N, BLOCK_L)` tile, scans
# them along time, applies {eq}`gpu-chunk-carry`, contracts with $C$ and writes `out`:
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: _selective_scan_fwd_kernel
# ```
#
# Masks handle the edges: `mask_d` the channels past $D$ in the last block, `mask_l` the steps
# past $L$, `mask_n` the state entries past $N$ when $N$ is not a power of two (tiles must
# be). Delta's bias and softplus, the skip term $D u$ and the gate $y \cdot \mathrm{silu}(z)$
# are fused into the same pass, switched at compile time by `tl.constexpr` flags.
#
# We run it through the interpreter on a small problem — batch 2, $D = 4$, $L = 40$ (chunks of
# 16, so the last one is partial), $N = 4$, with $B$, $C$ per time step, skip term, gate,
# bias and softplus — and compare with the sequential reference of chapter 6,
# `ssm.selective_scan(..., method="sequential")`, in float32:

# %%
def make_problem(batch=2, dim=4, L=40, N=4, seed=0):
    """u, delta, A, B, C, D, z, delta_bias with Mamba's ranges, float32."""
    g = torch.Generator().manual_seed(seed)
    return {
        "u": torch.randn(batch, dim, L, generator=g),
        "delta": torch.randn(batch, dim, L, generator=g) - 1.0,
        "A": -torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1),
        "B": torch.randn(batch, N, L, generator=g),
        "C": torch.randn(batch, N, L, generator=g),
        "D": torch.randn(dim, generator=g),
        "z": torch.randn(batch, dim, L, generator=g),
        "delta_bias": 0.1 * torch.randn(dim, generator=g),
    }


problem = make_problem()
on_device = {k: v.to(DEVICE) for k, v in problem.items()}
out, last = triton_scan.selective_scan_triton(
    **on_device, delta_softplus=True, return_last_state=True, chunk_size=16
)
out_ref, last_ref = ssm.selective_scan(**problem, delta_softplus=True, return_last_state=True, method="sequential")
# float32 in both, different order of operations: rounding differences of order 1e-7 on O(1) values
torch.testing.assert_close(out.cpu(), out_ref, rtol=1e-5, atol=1e-5)
torch.testing.assert_close(last.cpu(), last_ref, rtol=1e-5, atol=1e-5)
print(f"out {tuple(out.shape)} and last state {tuple(last.shape)} agree with the sequential scan within 1e-5")

fig, ax = plt.subplots()
ax.plot(out_ref[0, 0].numpy(), color="0.6", linewidth=4, label="sequential reference")
ax.plot(out[0, 0].cpu().numpy(), "o", markersize=3, label="Triton kernel (interpreter)")
for boundary in (16, 32):
    ax.axvline(boundary - 0.5, color="k", linestyle="--", linewidth=0.8)
ax.set(xlabel="step $t$ (dashed: chunk boundaries, state carried across)", ylabel="out", title="batch 0, channel 0")
ax.legend()
plt.show()

# %% [markdown]
# ## The backward pass: a reverse scan, and recomputation
#
# Let $\ell$ be the loss and $\bar y_t = \partial \ell / \partial y_t$ the gradient arriving at
# the output. The state $h_t$ influences $\ell$ through $y_t$ and through $h_{t+1}$, so its
# total gradient (the adjoint of chapter 6) $G_t = \partial \ell / \partial h_t$ obeys
#
# $$
# G_t = \bar A_{t+1} \odot G_{t+1} + C_t\, \bar y_t , \qquad G_{L} = 0 ,
# $$ (gpu-reverse)
#
# a recurrence of the same form as {eq}`gpu-recurrence` running backwards in time, with pairs
# $(\bar A_{t+1}, C_t \bar y_t)$: the same operator {eq}`gpu-combine` in a reverse scan,
# `tl.associative_scan(..., reverse=True)`, with the gradient carried from chunk to chunk
# exactly like the state (if the last state is an output, its gradient starts the carry). From
# $G_t$ every input gradient is a local product (chain rule through $\bar A_t =
# \exp(\Delta_t A)$ and $\bar B_t u_t = \Delta_t B_t u_t$), summed over $n$ where the input
# does not carry an $n$ index:
#
# $$
# \begin{aligned}
# \frac{\partial \ell}{\partial C_t} &= \bar y_t\, h_t, &
# \frac{\partial \ell}{\partial B_t} &= \Delta_t u_t\, G_t, &
# \frac{\partial \ell}{\partial u_t} &= \Delta_t\, B_t^\top G_t + D\, \bar y_t, \\
# \frac{\partial \ell}{\partial \Delta_t} &= \textstyle\sum_n G_t \big(A\, \bar A_t h_{t-1} + B_t u_t\big), &
# \frac{\partial \ell}{\partial A} &= \textstyle\sum_t G_t\, \Delta_t\, \bar A_t h_{t-1}, &
# \frac{\partial \ell}{\partial D} &= \textstyle\sum_t \bar y_t u_t .
# \end{aligned}
# $$ (gpu-grads)
#
# With the gate, $\bar y_t = \bar o_t\, \mathrm{silu}(z_t)$ for the gradient $\bar o_t$ of the
# gated output, and $\partial \ell / \partial z_t = \bar o_t\, y_t\, \sigma(z_t)\big(1 + z_t(1 -
# \sigma(z_t))\big)$; with softplus, $\partial \Delta_t / \partial \delta_t = \sigma(\delta_t +
# \text{bias})$, and the bias gradient is the sum of $\partial \ell / \partial \delta_t$ over
# batch and time; here $\delta_t$ is the raw `delta` input, before bias and softplus. In the
# selective case, $B$ and $C$ of shape `(batch, N, L)` are shared by all channels, so their
# gradients are sums over channels, which programs of different channels add into HBM with
# atomic additions.
#
# {eq}`gpu-grads` needs $h_t$ and $\bar A_t h_{t-1}$ at every step. Storing all states would
# write the `(batch, D, L, N)` tensor that fusion avoided. Instead the forward kernel stores the
# state only at chunk starts — $T$ times fewer entries — and the backward kernel, walking the
# chunks from last to first, **recomputes** each chunk's states with the forward scan and
# {eq}`gpu-chunk-carry`. Recomputing is cheap: it reads the same inputs the backward pass
# reads anyway. It also avoids a division: $\bar A_t h_{t-1} = h_t - \bar B_t u_t$, so
# $h_{t-1}$ itself is never needed (dividing by $\bar A_t$, which can underflow to $0$,
# would be unstable).
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: _selective_scan_bwd_kernel
# ```
#
# The two kernels are tied together by a `torch.autograd.Function`, whose forward saves the
# inputs and the chunk-boundary states, and whose backward launches the backward kernel and
# sums the per-batch partial gradients of `A`, `D` (and of `B`, `C` when they are per channel,
# `(D, N)`):
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: SelectiveScanTriton
# ```
#
# The check: every gradient of a loss that weights all outputs and the last state, against
# PyTorch's automatic differentiation through the sequential reference.

# %%
def loss_of(out, last):
    weights = torch.cos(torch.arange(out.shape[-1], dtype=out.dtype, device=out.device))
    return (out * weights).sum() + (last**2).sum()


ours = {k: v.detach().clone().to(DEVICE).requires_grad_() for k, v in problem.items()}
loss_of(*triton_scan.selective_scan_triton(**ours, delta_softplus=True, return_last_state=True, chunk_size=16)).backward()
ref = {k: v.detach().clone().requires_grad_() for k, v in problem.items()}
loss_of(*ssm.selective_scan(**ref, delta_softplus=True, return_last_state=True, method="sequential")).backward()
for name in problem:
    # float32 sums over at most 40 steps x 4 states of O(1-10) terms: within 1e-4
    torch.testing.assert_close(ours[name].grad.cpu(), ref[name].grad, rtol=1e-4, atol=1e-4, msg=name)
print(f"all {len(problem)} gradients ({', '.join(problem)}) agree with autograd through the loop within 1e-4")

# %% [markdown]
# The unit tests (`tests/test_triton_scan.py`) repeat these checks against an independent
# float64 loop for $B$, $C$ shared or per step, with and without $D$, $z$, bias and softplus,
# partial chunks and channel blocks, $L = 1$, and $L = 16\,400$ (no overflow, and gradients
# checked by finite differences), plus float64 inputs.
#
# ## Compiled for a GPU, without a GPU
#
# The interpreter is lenient: it accepts code that the GPU compiler rejects (a tile whose size
# is not a power of two, a loop-carried value that changes dtype). So the package can also
# push both kernels through Triton's whole compiler — Triton IR, GPU IR, LLVM IR, PTX and
# `ptxas` — for a chosen NVIDIA architecture, which needs no GPU:
#
# ```{literalinclude} ../ssm/triton_scan.py
# :pyobject: compile_kernels
# ```
#
# A process's kernels are either interpreted or compiled, fixed when Triton is imported, so we
# compile in a fresh process with `TRITON_INTERPRET=0`, for an H100/H200 (compute capability
# 9.0):

# %%
worker = (
    "from ssm.triton_scan import compile_kernels\n"
    "for name, ptx in compile_kernels(90).items():\n"
    "    target = next(line for line in ptx.splitlines() if line.startswith('.target'))\n"
    "    print(name, target, 'spills' if 'st.local' in ptx else 'no spills')\n"
)
env = dict(os.environ, TRITON_INTERPRET="0")
compiled = subprocess.run([sys.executable, "-c", worker], env=env, capture_output=True, text=True, cwd="..", timeout=300)
assert compiled.returncode == 0, compiled.stderr[-2000:]
print(compiled.stdout.strip())
assert compiled.stdout.count(".target sm_90") == 2 and compiled.stdout.count("no spills") == 2

# %% [markdown]
# Both kernels compile to PTX for `sm_90a` and keep every value in registers (no `st.local`,
# no spills to local memory). `tests/test_triton_compile.py` does the same for an A100
# (`sm_80`), with every flag off, and for float64.
#
# ## Speed
#
# ### The interpreter is slow
#
# The interpreter runs each program of the grid one after the other, and each
# `tl.associative_scan` element by element in Python. The same forward pass as above, timed
# against the sequential loop and the chunked PyTorch scan of chapter 6 on this CPU (the
# machine is shared, so times are noisy; each is the best of three):

# %%
# NBVAL_IGNORE_OUTPUT
with torch.no_grad():
    timings = {
        "triton (interpreter)": ssm.best_time(lambda: triton_scan.selective_scan_triton(**on_device, delta_softplus=True, chunk_size=16), repeats=3),
        "sequential": ssm.best_time(lambda: ssm.selective_scan(**problem, delta_softplus=True, method="sequential"), repeats=3),
        "chunked": ssm.best_time(lambda: ssm.selective_scan(**problem, delta_softplus=True, method="chunked"), repeats=3),
    }
elements = 2 * 4 * 40 * 4  # batch * D * L * N state entries (padded to 48 steps in the kernel)
for name, seconds in timings.items():
    print(f"{name:>22}: {seconds * 1e3:8.2f} ms")
print(f"interpreter: {timings['triton (interpreter)'] / elements * 1e6:.0f} us per state entry")

# %%
assert timings["triton (interpreter)"] > 50 * timings["sequential"]
assert timings["triton (interpreter)"] > 50 * timings["chunked"]
assert timings["triton (interpreter)"] / elements > 10e-6

# %% [markdown]
# The interpreter is more than fifty times slower than even the Python loop, at well over
# 10 µs per state entry: it is a correctness tool. Its numbers say nothing about the kernel's
# speed on a GPU.
#
# ### Measured speed on a CPU
#
# On a CPU our kernels only run interpreted; what a CPU can show is how the PyTorch methods of
# chapter 6 compare with the sequential loop. The CPU benchmark (`python -m benchmarks`, i.e.
# `benchmarks/scan_cpu.py`) measures all of them — forward and forward + backward in float32,
# batch 2, $D = 64$, $N = 16$, $B$ and $C$ per step, softplus on $\Delta$ — interleaved in one
# process on a shared two-core machine (so ratios mean more than absolute times), and the peak
# memory of each in its own process. Its committed results:

# %%
# NBVAL_IGNORE_OUTPUT
cpu = json.loads(Path(CPU_RESULTS).read_text())
setting, machine = cpu["setting"], cpu["machine"]
print(f"setting: {setting}")
print(f"machine: {machine['platform']}, {machine['cpu_count']} CPUs, torch {machine['torch']}; command: {cpu['command']}")
cpu_lengths = sorted({int(L) for per_L in cpu["results"].values() for L in per_L})
print(f"\n{'method':>14} " + " ".join(f"{'L=' + str(L):>16}" for L in cpu_lengths))
print(f"{'':>14} " + " ".join(f"{'fwd+bwd ms (x)':>16}" for L in cpu_lengths))
for method, per_L in cpu["results"].items():
    cells = []
    for L in cpu_lengths:
        entry = per_L.get(str(L))
        speedup = cpu["ratios_vs_sequential"][method].get(str(L), {}).get("speedup_forward_backward")
        cells.append(f"{entry['forward_backward_s'] * 1e3:9.1f} ({speedup:4.1f}x)" if entry else f"{'—':>16}")
    print(f"{method:>14} " + " ".join(cells))

fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.6))
for method, per_L in cpu["results"].items():
    done = sorted(int(L) for L in per_L)
    ax_time.loglog(done, [per_L[str(L)]["forward_backward_s"] for L in done], "o-", label=method)
    ax_mem.loglog(done, [max(per_L[str(L)]["peak_mib"], 1e-1) for L in done], "o-", label=method)
ax_time.set(xlabel="sequence length $L$", ylabel="forward + backward (s)", title="time on a shared CPU")
ax_mem.set(xlabel="sequence length $L$", ylabel="peak memory growth (MiB)", title="memory")
ax_time.legend()
plt.tight_layout()
plt.show()

# %%
assert (setting["dtype"], setting["batch"], setting["D"], setting["N"]) == ("float32", 2, 64, 16)
longest = str(max(int(L) for L in cpu["results"]["chunked"]))
speedups = [r["speedup_forward_backward"] for per_L in cpu["ratios_vs_sequential"].values() for r in per_L.values()]
materialised = [cpu["results"][m][longest]["peak_mib"] for m in ("blelloch", "hillis_steele") if longest in cpu["results"][m]]
assert max(speedups) < 10, max(speedups)
at_longest = {m: per_L[longest]["forward_backward_s"] for m, per_L in cpu["results"].items() if longest in per_L}
assert min(at_longest, key=at_longest.get) == "chunked"
assert cpu["results"]["chunked"][longest]["peak_mib"] < 0.5 * min(materialised)
print(f"best forward+backward speed-up over the loop on this CPU: under 10x")
print(f"at L = {longest} the chunked scan is the fastest and needs less than half the memory of the scans that materialise (batch, D, L, N)")

# %% [markdown]
# The lesson for GPUs is already visible on two CPU cores. No PyTorch method is even ten times
# faster than the loop here: a CPU has little parallelism for a scan to use, and the
# tree-shaped scans pay for theirs with $O(\log L)$ passes over `(batch, D, L, N)` tensors.
# Their memory grows with those tensors, while the chunked scan, which materialises one block
# at a time, is the fastest at the longest length and needs less than half their memory there:
# memory traffic, not arithmetic, is the cost to design against — the point of
# {eq}`gpu-bytes-naive`.
#
# ### Measured speed on a GPU
#
# **Not yet measured.** The GPU benchmark is prepared but has not run on a GPU yet:
# `bash benchmarks/gpu.sh` on a CUDA machine runs `tests/test_triton_scan.py` with the kernels
# *compiled*, then the grid of the issue — batch 8, $D = 1024$, $N = 16$,
# $L \in \{512, 2048, 8192\}$, float32, forward and forward + backward — for the sequential
# loop, the PyTorch scans, our Triton kernels and, where it can be installed, `mamba_ssm`'s CUDA
# `selective_scan_fn`, and writes `benchmarks/results/gpu_scan.json` with the GPU model,
# driver, library versions, date and command. It also reports the Triton forward's effective
# bandwidth, {eq}`gpu-bytes-fused` divided by the measured time, as a fraction of the
# datasheet peak. The targets to check are: forward + backward within 1.5× of `mamba_ssm` at
# $L = 2048$, at least 50 % of peak HBM bandwidth on the forward pass, and at least 20×
# faster than the PyTorch Blelloch scan. This cell shows the results once the file exists:

# %%
gpu_results = Path("../benchmarks/results/gpu_scan.json")
if not gpu_results.exists():
    print("no GPU results committed yet: run `bash benchmarks/gpu.sh` on a CUDA machine")
else:
    report = json.loads(gpu_results.read_text())
    machine = report["machine"]
    print(f"{machine['gpu']}, driver {machine['driver']}, torch {machine['torch']}, triton {machine['triton']}, {machine['date_utc']}")
    print(f"command: {machine['command']}")
    lengths = sorted({int(L) for per_L in report["results"].values() for L in per_L})
    fig, ax = plt.subplots()
    for method, per_L in report["results"].items():
        done = [L for L in lengths if isinstance(per_L.get(str(L)), dict)]
        times = [per_L[str(L)]["forward_backward_s"] for L in done]
        print(f"{method:>14} " + " ".join(f"L={L}: {t * 1e3:.3f} ms" for L, t in zip(done, times)))
        ax.loglog(done, times, "o-", label=method)
    ax.set(xlabel="sequence length $L$", ylabel="forward + backward (s)", title=machine["gpu"])
    ax.legend()
    plt.show()
    print({k: None if v is None else round(v, 3) for k, v in report["goals_at_L2048"].items()})

# %% [markdown]
# ## Summary
#
# - A scan is limited by memory traffic: unfused, it moves the `(batch, D, L, N)` state
#   through HBM several times ({eq}`gpu-bytes-naive`); fused, it moves only its inputs and
#   outputs ({eq}`gpu-bytes-fused`), about $2N$ times fewer bytes.
# - The fused kernel tiles the problem over (batch, channel blocks) and chunks of time, scans
#   each chunk with `tl.associative_scan` and the operator {eq}`gpu-combine`, and carries the
#   state between chunks in registers ({eq}`gpu-chunk-carry`). The segment-sum form
#   {eq}`gpu-segsum` is the alternative; it is stable only when masked before exponentiating.
# - The backward pass is a reverse scan of the same form ({eq}`gpu-reverse`) that recomputes
#   each chunk's states from the boundary states saved by the forward pass ({eq}`gpu-grads`).
# - On this CPU the kernels run through the Triton interpreter and agree with the sequential
#   reference, forward and backward; they compile for A100 and H100/H200 targets. Their speed
#   on a GPU is not measured yet: `benchmarks/gpu.sh` is the prepared measurement.

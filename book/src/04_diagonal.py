# %% [markdown]
# # 4. Diagonal state spaces: S4D and DSS
#
# Chapter 3 kept the HiPPO matrix exact: diagonal plus rank one, with a Cauchy kernel and the
# Woodbury identity to handle the rank-one term. DSS {cite}`gupta2022dss` asked what happens
# if the rank-one term is simply dropped, keeping only the diagonal $\Lambda$; S4D
# {cite}`gu2022s4d` then worked out how to parameterise and initialise such diagonal models.
# The kernel becomes a two-line computation. This chapter derives it, compares the
# initialisations, the two discretizations and the DSS variant, measures how far the diagonal
# kernel is from the S4 kernel, and builds the trainable `S4D` and `DSS` layers.
#
# Notation as in chapter 3: $N$ state size, $L$ length, $\Delta$ step size, $H$ channels;
# $\mathrm{Re}$ and $\mathrm{Im}$ are real and imaginary parts and $\bar z$ the complex
# conjugate of $z$.

# %%
%matplotlib inline

import matplotlib.pyplot as plt
import numpy as np
import torch

import ssm
from ssm.s4d import dss_softmax, vandermonde

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## Dropping the low-rank term: conjugate pairs and the Vandermonde kernel
#
# Let $A = \mathrm{diag}(A_0, \dots, A_{N-1})$ be diagonal and complex. We want a *real* model
# (real input, real output) whose state has $N$ real degrees of freedom. A real matrix has
# eigenvalues in conjugate pairs, so we take $N/2$ modes $A_n$ with their conjugates
# $\bar A_n$, and likewise $(B_n, \bar B_n)$ and $(C_n, \bar C_n)$. A discretization of a
# conjugate pair gives a conjugate pair, and the two terms of a pair in the kernel are
# conjugates, so their sum is twice the real part:
#
# $$
# \bar K_\ell = \sum_{n<N/2} \Big(C_n \bar B_n \bar A_n^{\ell} + \overline{C_n \bar B_n \bar A_n^{\ell}}\Big)
# = 2\,\mathrm{Re} \sum_{n<N/2} C_n \bar B_n \bar A_n^{\ell}.
# $$ (s4d-kernel)
#
# Only the $N/2$ modes are stored. The sum is a product with a **Vandermonde matrix**
# $\mathcal V_{n\ell} = \bar A_n^\ell$:
#
# $$
# \bar K = 2\,\mathrm{Re}\big[(C \circ \bar B)^T \mathcal V\big], \qquad
# \mathcal V_{n\ell} = \bar A_n^{\ell} = e^{\ell \log \bar A_n},
# $$ (s4d-vandermonde)
#
# where $\circ$ is the elementwise product. Materialising $\mathcal V$ costs $O(NL)$ time and
# memory and involves no matrix at all: no $\tilde C$, no Woodbury, no FFT.
#
# ```{literalinclude} ../ssm/s4d.py
# :pyobject: vandermonde
# ```
#
# ```{literalinclude} ../ssm/s4d.py
# :pyobject: s4d_kernel
# ```
#
# We check {eq}`s4d-kernel` against the naive kernel of chapter 1 applied to the full
# $N$-state system written as a dense matrix $\mathrm{diag}(A, \bar A)$, for both
# discretizations, $H = 3$ channels with different $\Delta$ and a length that is not a power
# of two:

# %%
H, N, L = 3, 64, 1000
A = ssm.s4d_init(N, "inv").repeat(H, 1)
B = torch.randn(H, N // 2, dtype=torch.complex128)
C = torch.randn(H, N // 2, dtype=torch.complex128)
dt = torch.tensor([0.001, 0.01, 0.1])
A_dense = torch.diag_embed(torch.cat([A, A.conj()], dim=-1))
B_full, C_full = torch.cat([B, B.conj()], dim=-1), torch.cat([C, C.conj()], dim=-1)
for method in ["zoh", "bilinear"]:
    K = ssm.s4d_kernel(A, B, C, dt, L, method)
    A_bar, B_bar = ssm.discretize(A_dense, B_full, dt, method)
    K_naive = ssm.ssm_kernel(A_bar, B_bar, C_full, L)
    error = ((K - K_naive.real).norm() / K_naive.real.norm()).item()
    assert error < 1e-10, error
    assert K_naive.imag.abs().max() < 1e-10 * K_naive.real.abs().max()
    print(f"{method:8s}: s4d_kernel equals the dense naive kernel, relative error below 1e-10")

# %% [markdown]
# Both agree with the dense $N$-state system to better than $10^{-10}$, whose kernel is real
# (imaginary part below $10^{-10}$ of the real part): the conjugate-pair convention is exact.
#
# ## ZOH versus bilinear for a diagonal $A$
#
# For a diagonal matrix, the two discretizations of chapter 1 act mode by mode:
#
# $$
# \text{ZOH:}\quad \bar A_n = e^{\Delta A_n},\ \ \bar B_n = \frac{e^{\Delta A_n} - 1}{A_n} B_n;
# \qquad
# \text{bilinear:}\quad \bar A_n = \frac{1 + \Delta A_n / 2}{1 - \Delta A_n / 2},\ \
# \bar B_n = \frac{\Delta B_n}{1 - \Delta A_n / 2}.
# $$ (s4d-disc)
#
# (The package computes them with `ssm.discretize`, shown in chapter 1, which accepts a
# diagonal $A$ of shape `(H, N/2)`.) With $z = \Delta A_n$, the bilinear $\bar A_n$ is the
# $(1,1)$ Padé approximant of $e^{z}$: the two agree to third order,
# $e^z - \frac{1+z/2}{1-z/2} = -\frac{z^3}{12} + O(z^4)$. They differ for large $|z|$, that is
# for fast modes: ZOH damps every mode by $|\bar A_n| = e^{\Delta\,\mathrm{Re} A_n}$, whatever
# its frequency, while the bilinear rule maps $z \to \infty$ along the imaginary direction to
# $\bar A_n \to -1$, on the unit circle, so its fast modes are barely damped:

# %%
A_lin = ssm.s4d_init(64, "lin")
dt = 0.1
A_zoh, _ = ssm.discretize(A_lin, torch.ones_like(A_lin), dt, "zoh")
A_bil, _ = ssm.discretize(A_lin, torch.ones_like(A_lin), dt, "bilinear")
z = dt * A_lin
small = z.abs() < 0.1
gap = (A_zoh - A_bil).abs()
assert bool(small.any()) and bool((gap[small] <= z[small].abs() ** 3 / 6).all())
assert A_bil.abs()[-1] > 0.99 > 0.96 > A_zoh.abs()[-1]
print(f"fastest S4D-Lin mode, dt = {dt}: |A_bar| ZOH {A_zoh.abs()[-1]:.4f}, bilinear {A_bil.abs()[-1]:.4f}")

fig, ax = plt.subplots()
ax.plot(A_lin.imag * dt, A_zoh.abs(), "o-", ms=3, label="ZOH")
ax.plot(A_lin.imag * dt, A_bil.abs(), "s-", ms=3, label="bilinear")
ax.set(xlabel=r"$\Delta\,\mathrm{Im}\,A_n$ (S4D-Lin, $N = 64$, $\Delta = 0.1$)", ylabel=r"$|\bar A_n|$",
       title="damping per step of each mode")
ax.legend()
plt.show()

# %% [markdown]
# For the slow modes ($|\Delta A_n| < 0.1$) the two rules agree to within $|\Delta A_n|^3/6$
# (asserted); for the fastest S4D-Lin mode at $\Delta = 0.1$ the bilinear $|\bar A_n|$ is
# above 0.99 while ZOH's is below 0.96 (asserted), the value $e^{-0.05}$ shared by all modes.
# S4 uses the bilinear rule, because it makes the generating function rational in $\omega$
# (chapter 3); a diagonal model is free to use either, and S4D defaults to ZOH.
#
# ## Initialisations
#
# A diagonal model needs good eigenvalues. S4D proposes three, each with real part $-\tfrac12$
# and $n = 0, \dots, N/2 - 1$:
#
# $$
# \text{S4D-LegS:}\quad A_n = \Lambda_n,\ \text{the eigenvalues of the normal part } S \text{ of HiPPO-LegS (chapter 3) with } \mathrm{Im}\,\Lambda_n > 0;
# $$ (s4d-legs)
#
# $$
# \text{S4D-Inv:}\quad A_n = -\tfrac12 + i\,\frac{N}{\pi}\Big(\frac{N}{2n+1} - 1\Big);
# $$ (s4d-inv)
#
# $$
# \text{S4D-Lin:}\quad A_n = -\tfrac12 + i\,\pi n.
# $$ (s4d-lin)
#
# S4D-Lin places the frequencies on a uniform grid, like a damped Fourier basis; S4D-Inv
# spreads them like $1/(2n+1)$, a closed-form imitation of the spread of the LegS
# frequencies.
#
# ```{literalinclude} ../ssm/s4d.py
# :pyobject: s4d_init
# ```

# %%
N = 64
inits = {kind: ssm.s4d_init(N, kind) for kind in ["legs", "inv", "lin"]}
n = torch.arange(N // 2)
for kind, A in inits.items():
    torch.testing.assert_close(A.real, torch.full((N // 2,), -0.5), rtol=0, atol=1e-12)
torch.testing.assert_close(inits["lin"].imag, torch.pi * n.double(), rtol=0, atol=0)
legs_sorted = inits["legs"].imag.sort().values
inv_sorted = inits["inv"].imag.sort().values
ratio = legs_sorted[4:] / inv_sorted[4:]
print(f"LegS / Inv frequencies, modes 4..{N // 2 - 1}: min {ratio.min():.2f}, max {ratio.max():.2f}")
assert 0.7 < ratio.min() and ratio.max() < 1.3

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
for kind, A in inits.items():
    ax0.semilogy(A.imag.sort().values.numpy(), "o", ms=3, label=f"S4D-{kind.capitalize() if kind != 'legs' else 'LegS'}")
ax0.set(xlabel="mode (sorted)", ylabel=r"Im $A_n$", title=f"frequencies, N = {N}")
ax0.legend()
t = torch.linspace(0, 6, 600)
for kind, style in zip(inits, ["-", "--", ":"], strict=True):
    A_sorted = inits[kind][inits[kind].imag.argsort()]
    for m, color in zip([1, 3, 6], ["C0", "C1", "C2"], strict=True):
        ax1.plot(t, torch.exp(t * A_sorted[m]).real, style, color=color, lw=1.2)
ax1.set(xlabel="time $t$", ylabel=r"Re $e^{t A_n}$",
        title="basis functions of modes 1, 3, 6 (colours); LegS -, Inv --, Lin :")
plt.tight_layout()
plt.show()

# %% [markdown]
# Beyond the first four modes, the S4D-LegS and S4D-Inv frequencies are within 30 % of each
# other (asserted), while S4D-Lin's grow linearly. Each mode's basis function
# $e^{tA_n} = e^{-t/2}\big(\cos(t\,\mathrm{Im} A_n) + i \sin(t\,\mathrm{Im} A_n)\big)$ is a damped
# oscillation; all of them decay at the same rate $\tfrac12$, and the kernel is a learned
# combination of them, weighted by $C_n \bar B_n$.
#
# ## S4 against S4D-LegS: the same eigenvalues without the rank-one term
#
# S4D-LegS keeps $\Lambda$ from the DPLR form of HiPPO-LegS and drops $-PP^*$. With the
# rank-one term, $V(\Lambda - PP^*)V^*$ *is* the HiPPO matrix, whose eigenvalues are the real
# numbers $-1, \dots, -N$ (chapter 3); without it, the eigenvalues are $-\tfrac12 + i\mu_n$.
# So the two systems are different for every finite $N$. The S4D paper {cite}`gu2022s4d`
# argues that the diagonal part alone, with $B$ halved, recovers the S4 kernel as
# $N \to \infty$. We check this numerically: a real output vector in the HiPPO basis, $CV$ in
# the DPLR basis (called $C$ in the code), the S4 kernel of $(\Lambda, P, \tilde B, CV)$ against
# the S4D kernel of $(\Lambda, \tfrac12\tilde B, CV)$, both with the bilinear rule,
# $\Delta = 0.1$, $L = 500$, for growing $N$:

# %%
sizes, differences = [32, 64, 128, 256], []
dt, L = 0.1, 500
generator = torch.Generator().manual_seed(0)
for N in sizes:
    Lambda, P, B, V = ssm.dplr(N)
    C = torch.randn(N, generator=generator).to(torch.complex128) @ V
    K_s4 = ssm.s4_kernel(Lambda, P, B, C, dt, L)
    K_s4d = ssm.s4d_kernel(Lambda[: N // 2], B[: N // 2] / 2, C[: N // 2], dt, L, "bilinear")
    differences.append(((K_s4d - K_s4).norm() / K_s4.norm()).item())
    print(f"N = {N:3d}: relative difference S4D-LegS vs S4 {differences[-1]:.4f}")
assert all(a > b for a, b in zip(differences, differences[1:]))
assert differences[-1] < 0.15
half = N // 2
K_zoh = ssm.s4d_kernel(Lambda[:half], B[:half] / 2, C[:half], dt, L, "zoh")
K_full_B = ssm.s4d_kernel(Lambda[:half], B[:half], C[:half], dt, L, "bilinear")
unlike = [((K - K_s4).norm() / K_s4.norm()).item() for K in (K_zoh, K_full_B)]
print(f"N = {N}: with ZOH {unlike[0]:.4f}, with B not halved {unlike[1]:.4f}")
assert min(unlike) > 0.5

fig, ax = plt.subplots()
ax.plot(K_s4.numpy(), color="0.7", lw=4, label="S4 (DPLR, = HiPPO-LegS)")
ax.plot(K_s4d.numpy(), "k--", lw=1, label=r"S4D-LegS, $B/2$")
ax.set(xlim=(0, 150), xlabel=r"lag $\ell$", ylabel=r"$\bar K_\ell$", title=f"kernels at initialisation, N = {sizes[-1]}")
ax.legend()
plt.show()

# %% [markdown]
# The difference shrinks steadily with $N$ and is below 15 % at $N = 256$ (asserted): at
# initialisation, the diagonal model is an approximation of S4 that improves with the state
# size. Comparing like with like matters: with ZOH instead of the bilinear rule, or with
# $B$ not halved, the difference at $N = 256$ stays above 50 % (asserted). After training, of course,
# neither model stays at its initialisation.
#
# Now the cost. Both kernels at $L = 4096$ for $N = 64$ and
# $N = 256$, S4 with `pairs=True` as its layer uses it, fastest of five runs, float64, one
# thread (timings from the machine that executed this notebook, possibly shared):

# %%
# NBVAL_IGNORE_OUTPUT
threads = torch.get_num_threads()
torch.set_num_threads(1)
L, speedup = 4096, {}
for N in [64, 256]:
    Lambda, P, B, V = ssm.dplr(N)
    C = torch.randn(N, generator=generator).to(torch.complex128) @ V
    t_s4 = ssm.best_time(lambda: ssm.s4_kernel(Lambda, P, B, C, 0.01, L, pairs=True), repeats=5)
    t_s4d = ssm.best_time(lambda: ssm.s4d_kernel(Lambda[: N // 2], B[: N // 2], C[: N // 2], 0.01, L), repeats=5)
    speedup[N] = t_s4 / t_s4d
    print(f"N = {N:3d}: S4 kernel {1e3 * t_s4:6.2f} ms, S4D kernel {1e3 * t_s4d:6.2f} ms, ratio {speedup[N]:.1f}")
torch.set_num_threads(threads)

# %%
assert speedup[256] > 1.5, speedup

# %% [markdown]
# At $N = 256$ the S4D kernel is more than 1.5 times as fast (asserted; the measured factors
# are printed above). At small $N$ fixed overheads dominate and either kernel can be the faster
# one on a CPU; the operation counts say why the gap opens as $N$ grows: S4 pays
# $O(N^3 \log L)$ for $\tilde C$ and evaluates four Cauchy sums over $N$ modes, S4D one
# Vandermonde sum over $N/2$ modes.
#
# ## DSS: a softmax-normalised kernel
#
# DSS {cite}`gupta2022dss` starts from the same diagonal ZOH kernel and rewrites it. With
# $\bar A_n = e^{\Delta\Lambda_n}$ and ZOH's $\bar B_n$ from {eq}`s4d-disc`, one mode
# contributes $C_n B_n \frac{e^{\Delta\Lambda_n} - 1}{\Lambda_n} e^{\ell\Delta\Lambda_n}$. The
# geometric sum $\sum_{r<L} e^{r\Delta\Lambda_n} = \frac{e^{L\Delta\Lambda_n} - 1}{e^{\Delta\Lambda_n} - 1}$
# lets us replace $e^{\Delta\Lambda_n} - 1$, and with the single weight
# $W_n = C_n B_n\,(e^{L\Delta\Lambda_n} - 1)$ the kernel becomes
#
# $$
# \bar K_\ell = 2\,\mathrm{Re} \sum_{n<N/2} \frac{W_n}{\Lambda_n}\,
# \frac{e^{\ell\Delta\Lambda_n}}{\sum_{r<L} e^{r \Delta\Lambda_n}}
# = 2\,\mathrm{Re}\Big[\Big(\frac{W}{\Lambda}\Big)^T \mathrm{softmax}_\ell(\ell\Delta\Lambda)\Big],
# $$ (s4d-dss)
#
# a softmax over positions $\ell$ of the complex logits $\ell\Delta\Lambda_n$, row by row. It
# differs from S4D in three ways: $B$ and $C$ are merged into one weight $W$; the kernel is
# normalised over the sequence length, so it depends on $L$; and the normalisation keeps it
# bounded even when $\mathrm{Re}\,\Lambda_n > 0$ (a growing mode), because the softmax divides by
# the sum of the same exponentials. To avoid overflow the logits are shifted by the one with the
# largest real part, which leaves a softmax unchanged.
#
# ```{literalinclude} ../ssm/s4d.py
# :pyobject: dss_softmax
# ```
#
# ```{literalinclude} ../ssm/s4d.py
# :pyobject: dss_kernel
# ```

# %%
H, N, L = 2, 16, 300
Lambda = ssm.s4d_init(N, "legs").repeat(H, 1)
W = torch.randn(H, N // 2, dtype=torch.complex128)
dt = torch.tensor([0.01, 0.1])
K_dss = ssm.dss_kernel(Lambda, W, dt, L)
C_equivalent = W / torch.expm1(L * dt[:, None] * Lambda)  # C_n B_n with B = 1
K_zoh = ssm.s4d_kernel(Lambda, torch.ones_like(W), C_equivalent, dt, L, "zoh")
torch.testing.assert_close(K_dss, K_zoh, rtol=1e-10, atol=1e-12)

growing = torch.complex(torch.full((N // 2,), 0.05), Lambda[0].imag)
K_dss_growing = ssm.dss_kernel(growing, W[0], 1.0, 2000)
K_s4d_growing = ssm.s4d_kernel(growing, torch.ones_like(W[0]), W[0], 1.0, 2000)
print(f"Re Lambda = +0.05, L = 2000: max |K| DSS {K_dss_growing.abs().max():.3f}, "
      f"S4D {K_s4d_growing.abs().max():.3e}")
assert K_dss_growing.abs().max() < 10 < 1e30 < K_s4d_growing.abs().max()

# %% [markdown]
# The DSS kernel equals the ZOH kernel of S4D with $C_n B_n = W_n / (e^{L\Delta\Lambda_n} - 1)$
# to $10^{-10}$ (asserted). With modes that grow ($\mathrm{Re}\,\Lambda_n = +0.05$, $\Delta = 1$,
# $L = 2000$) the DSS kernel stays below 10 while the unnormalised S4D kernel exceeds $10^{30}$
# (asserted). The same identity gives the DSS recurrence for a fixed length $L$:
# $h_k = e^{\Delta\Lambda} h_{k-1} + u_k$ and $y_k = 2\,\mathrm{Re}(\tilde C h_k)$ with
#
# $$
# \tilde C_n = \frac{W_n\,(e^{\Delta\Lambda_n} - 1)}{\Lambda_n\,(e^{L\Delta\Lambda_n} - 1)} .
# $$ (s4d-dss-step)
#
# Because $\tilde C$ depends on $L$, the recurrent form of DSS must be told the length over
# which the kernel is normalised (`DSS.setup_step(L)`).
#
# ## The S4D and DSS layers
#
# The layers follow the S4 layer of chapter 3: $H$ channels, per channel a step size
# $\log\Delta$, $N/2$ eigenvalues with real part $-e^{a} < 0$, the skip $D$, and the FFT
# convolution $y = \bar K * u + D u$. S4D trains $B$ (initialised to 1) and $C$; DSS trains $W$.
# Both have a recurrent `step`.
#
# ```{literalinclude} ../ssm/layers.py
# :pyobject: S4D
# ```
#
# ```{literalinclude} ../ssm/layers.py
# :pyobject: DSS.step
# ```

# %%
H, N, L = 4, 32, 200
u = torch.randn(2, H, L)
for layer in [ssm.S4D(H, N, init="legs"), ssm.S4D(H, N, init="lin", method="bilinear"), ssm.DSS(H, N)]:
    y = layer(u)
    y.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    if isinstance(layer, ssm.DSS):
        layer.setup_step(L)
    with torch.no_grad():
        state, y_steps = layer.default_state(2), []
        for k in range(L):
            y_k, state = layer.step(u[..., k], state)
            y_steps.append(y_k)
        error = (torch.stack(y_steps, -1) - y).abs().max().item()
    assert error < 1e-9, error
    names = ", ".join(name for name, p in layer.named_parameters() if any(p is q for q in ssm.ssm_parameters(layer)))
    print(f"{type(layer).__name__:4s}: recurrent = convolutional to 1e-9; SSM parameters: {names}")

# %% [markdown]
# For S4D (with either discretization) and DSS, every parameter receives a non-zero gradient,
# and the recurrent and convolutional forms agree to $10^{-9}$ (asserted).
#
# ## A block around the layer
#
# In a deep network, each SSM layer sits in a residual block: a LayerNorm {cite}`ba2016layernorm`,
# the layer, a GELU, a position-wise projection from $H$ to $2H$ channels followed by a gated
# linear unit {cite}`dauphin2017glu` ($\mathrm{GLU}(a, b) = a \odot \sigma(b)$) back to $H$,
# dropout and the residual connection. Chapter 8 stacks these blocks for every LTI model.
#
# ```{literalinclude} ../ssm/layers.py
# :pyobject: SequenceBlock
# ```

# %%
block = ssm.SequenceBlock(H, ssm.S4D(H, N), dropout=0.1).eval()
with torch.no_grad():
    y = block(u)
    state, y_steps = block.default_state(2), []
    for k in range(L):
        y_k, state = block.step(u[..., k], state)
        y_steps.append(y_k)
    error = (torch.stack(y_steps, -1) - y).abs().max().item()
assert y.shape == u.shape and error < 1e-9
print(f"block output {tuple(y.shape)}; recurrent = convolutional to 1e-9")

# %% [markdown]
# The block keeps the shape `(batch, H, L)` and, in evaluation mode, its step-by-step form
# matches the convolutional form to $10^{-9}$ (asserted).
#
# ## Summary
#
# - Without the low-rank term, the kernel of $N/2$ conjugate pairs is $2\,\mathrm{Re}$ of a
#   Vandermonde product {eq}`s4d-vandermonde`: $O(NL)$ and a few lines of code.
# - ZOH and the bilinear rule agree on slow modes and differ on fast ones {eq}`s4d-disc`; the
#   initialisations S4D-LegS, S4D-Inv and S4D-Lin {eq}`s4d-legs`–{eq}`s4d-lin` choose the
#   frequencies.
# - At initialisation, S4D-LegS approximates the S4 kernel better and better as $N$ grows,
#   and for large $N$ at a fraction of the cost.
# - DSS normalises the kernel with a softmax over positions {eq}`s4d-dss`, which bounds it
#   even for growing modes but ties its recurrence to the length {eq}`s4d-dss-step`.
#
# Every model so far is time-invariant: the same kernel for every input. The next chapter
# shows what that cannot do, and makes the parameters depend on the input.

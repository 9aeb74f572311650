# %% [markdown]
# # 2. HiPPO
#
# Chapter 1 ended with a question: which state matrix $A$ makes an SSM *remember*? A random
# stable $A$ forgets its input at the rate of its slowest eigenvalue. HiPPO ("high-order
# polynomial projection operators", {cite}`gu2020hippo`) answers by turning the question
# around: first say what the state should *mean* — the coefficients of the best polynomial
# approximation of everything the model has seen so far — and then *derive* the $A$ and $B$
# that keep those coefficients up to date as new input arrives. The resulting matrices are
# the initialisation of S4 (chapter 3) and of its diagonal descendants (chapter 4). The
# sliding-window variant goes back to the Legendre Memory Unit {cite}`voelker2019lmu`.
#
# ## Online function approximation
#
# Let $u(s)$, $s \ge 0$, be the input. At every time $t$ we want to summarise its history
# $u|_{[0,t]}$ by $N$ numbers. Pick
#
# * a **measure** $\mu^{(t)}$ saying how much each past moment matters, and
# * $N$ functions $g_0^{(t)}, \dots, g_{N-1}^{(t)}$, orthonormal for it:
#   $\int g_n^{(t)}(s)\, g_m^{(t)}(s)\, d\mu^{(t)}(s) = \delta_{nm}$.
#
# The best approximation of the history in their span, in the norm of $\mu^{(t)}$, has the
# coefficients
#
# $$
# c_n(t) = \int u(s)\, g_n^{(t)}(s)\, d\mu^{(t)}(s), \qquad
# u(s) \approx \sum_{n=0}^{N-1} c_n(t)\, g_n^{(t)}(s) .
# $$ (hippo-reconstruct)
#
# The state of our SSM will be $c(t) = (c_0(t), \dots, c_{N-1}(t))$. The task is to find an ODE
# $c'(t) = \dots$ that this vector obeys, so that it can be updated online from $u(t)$ alone.
#
# ### Legendre polynomials
#
# Both measures below are uniform on an interval, which we map to $x \in [-1, 1]$ with $x = 1$
# at the present. The orthogonal polynomials of the uniform measure on $[-1, 1]$ are the
# Legendre polynomials $P_n$: $P_0 = 1$, $P_1 = x$, and
#
# $$
# (n+1)\, P_{n+1}(x) = (2n+1)\, x\, P_n(x) - n\, P_{n-1}(x) .
# $$ (hippo-legendre-recurrence)
#
# They satisfy $\int_{-1}^{1} P_n P_m\, dx = \frac{2}{2n+1}\delta_{nm}$, so
# $g_n(x) = \sqrt{2n+1}\, P_n(x)$ is orthonormal for the probability measure $dx/2$.
# Three more facts do all the work in the derivations:
#
# 1. the end values $P_n(1) = 1$ and $P_n(-1) = (-1)^n$;
# 2. the derivative is a sum of lower-degree polynomials of the other parity,
#    $P_n' = \sum_{k < n,\ n-k \text{ odd}} (2k+1)\, P_k$;
# 3. $(x+1)\, P_n' = n\, P_n + \sum_{k<n} (2k+1)\, P_k$ — from fact 2 and the classical
#    identity $x P_n' = n P_n + P_{n-1}'$, whose right side adds the terms with $n-k$ even.
#
# The package evaluates the orthonormal basis with the recurrence:
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: legendre_basis
# ```
#
# We check orthonormality with Gauss–Legendre quadrature and the three facts with numpy's
# independent Legendre arithmetic (`numpy.polynomial.legendre`).

# %%
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import torch
from numpy.polynomial import legendre as npleg

import ssm

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_default_dtype(torch.float64)

# %%
N = 10
x_q, w_q = npleg.leggauss(40)  # exact for polynomials up to degree 79
G = ssm.legendre_basis(N, torch.from_numpy(x_q)).numpy()  # (40, N)
gram = G.T @ (w_q[:, None] / 2 * G)
assert np.allclose(gram, np.eye(N), atol=1e-13)

ends = ssm.legendre_basis(N, torch.tensor([1.0, -1.0]))
scale = torch.sqrt(2 * torch.arange(N) + 1.0)
torch.testing.assert_close(ends[0], scale)  # g_n(1) = sqrt(2n+1)
torch.testing.assert_close(ends[1], (-1.0) ** torch.arange(N) * scale)

for n in range(N):
    e_n = np.eye(N)[n]
    fact2 = sum((2 * k + 1) * np.eye(N)[k] for k in range(n) if (n - k) % 2 == 1)
    np.testing.assert_allclose(np.pad(npleg.legder(e_n), (0, 1)), fact2, atol=1e-12)
    lhs = npleg.legadd(npleg.legmulx(npleg.legder(e_n)), npleg.legder(e_n))  # (x+1) P_n'
    rhs = n * e_n + sum((2 * k + 1) * np.eye(N)[k] for k in range(n))
    np.testing.assert_allclose(np.pad(lhs, (0, N - len(lhs))), rhs, atol=1e-12)
print(f"g_0..g_{N - 1}: orthonormal, end values and derivative identities hold (atol 1e-12)")

# %% [markdown]
# ## HiPPO-LegS: the scaled Legendre measure
#
# LegS weighs the *whole* history uniformly: $\mu^{(t)} = \frac{1}{t}\mathbb{1}_{[0,t]}\,ds$.
# Map $[0, t]$ to $[-1, 1]$ by $x = 2s/t - 1$, so the basis is
# $g_n^{(t)}(s) = \sqrt{2n+1}\, P_n(2s/t - 1)$ and
#
# $$
# c_n(t) = \frac{1}{t}\int_0^t u(s)\, \sqrt{2n+1}\, P_n\!\left(\tfrac{2s}{t} - 1\right) ds .
# $$
#
# Differentiate in $t$ (the product rule on $1/t$, the upper limit, and $t$ inside $P_n$):
#
# $$
# c_n'(t) = -\frac{1}{t} c_n(t) + \frac{1}{t}\sqrt{2n+1}\,P_n(1)\, u(t)
# + \frac{1}{t}\int_0^t u(s)\, \sqrt{2n+1}\, P_n'(x)\, \left(-\frac{2s}{t^2}\right) ds .
# $$
#
# Since $2s/t = x + 1$, the last integrand contains $-\frac{1}{t}(x+1)P_n'(x)$; fact 3 turns it
# into $-\frac{1}{t}\left[n P_n + \sum_{k<n}(2k+1)P_k\right]$, and each $\sqrt{2n+1}\,(2k+1)\,P_k$
# integrates against $u$ to $\sqrt{2n+1}\sqrt{2k+1}\; c_k(t)$. With $P_n(1) = 1$:
#
# $$
# c_n'(t) = \frac{1}{t}\Big[-(n+1)\, c_n(t) - \sum_{k<n} \sqrt{(2n+1)(2k+1)}\; c_k(t)
# + \sqrt{2n+1}\; u(t)\Big],
# $$
#
# that is
#
# $$
# c'(t) = \frac{1}{t}\big(A\, c(t) + B\, u(t)\big),
# $$ (hippo-legs-ode)
#
# $$
# A_{nk} = -\begin{cases} \sqrt{(2n+1)(2k+1)} & n > k \\ n+1 & n = k \\ 0 & n < k \end{cases},
# \qquad B_n = \sqrt{2n+1} .
# $$ (hippo-legs)
#
# No approximation was made: for *any* input, the projection obeys this ODE exactly.
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: hippo_legs
# ```
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: hippo
# ```
#
# The derivation can be checked without trusting it: compute the projection $c(t)$ of some
# input directly by quadrature, differentiate it numerically by central differences, and
# compare with the right side of {eq}`hippo-legs-ode`.


# %%
def project(u, a, b, N, nodes=200):
    """c_n = (1/2) int_{-1}^{1} u(s(x)) g_n(x) dx on [a, b], s = a + (x+1)(b-a)/2, by quadrature."""
    x, w = npleg.leggauss(nodes)
    s = torch.from_numpy(a + (x + 1) / 2 * (b - a))
    return ssm.legendre_basis(N, torch.from_numpy(x)).T @ (torch.from_numpy(w) / 2 * u(s))


def u_smooth(s):
    return torch.sin(3 * s) + 0.5 * torch.cos(7 * s + 1) * torch.exp(-0.1 * s)


A, B = ssm.hippo(N, "legs")
t, eps = 2.0, 1e-5
dc_dt = (project(u_smooth, 0, t + eps, N) - project(u_smooth, 0, t - eps, N)) / (2 * eps)
rhs = (A @ project(u_smooth, 0, t, N) + B * u_smooth(torch.tensor(t))) / t
# central differences: error O(eps^2) plus rounding O(1e-16 / eps): about 1e-10 here
torch.testing.assert_close(dc_dt, rhs, rtol=0, atol=1e-7)
print(f"LegS: d/dt of the projection = (A c + B u)/t for all {N} coefficients (atol 1e-7)")

# %% [markdown]
# ## HiPPO-LegT: a sliding window
#
# LegT weighs only the last $\theta$ time units uniformly:
# $\mu^{(t)} = \frac{1}{\theta}\mathbb{1}_{[t-\theta,\,t]}\,ds$, with $x = 2(s - t)/\theta + 1$ and
# $g_n^{(t)}(s) = \sqrt{2n+1}\,P_n(x)$. Now both ends of the window move. Differentiating
# $c_n(t) = \frac{1}{\theta}\int_{t-\theta}^{t} u(s)\, g_n^{(t)}(s)\, ds$ gives a term for the
# new input at $x = 1$, a term for the input $u(t-\theta)$ leaving the window at $x = -1$, and
# the integral of $\partial_t g_n = -\frac{2}{\theta}\sqrt{2n+1}\, P_n'$ (fact 2):
#
# $$
# c_n' = \frac{\sqrt{2n+1}}{\theta}\Big[u(t) - (-1)^n\, u(t-\theta)\Big]
# - \frac{2}{\theta} \sum_{k<n,\ n-k \text{ odd}} \sqrt{(2n+1)(2k+1)}\; c_k .
# $$
#
# The state does not store $u(t - \theta)$; HiPPO replaces it by its reconstruction
# {eq}`hippo-reconstruct` at the window's old end, $u(t-\theta) \approx \sum_k c_k
# \sqrt{2k+1}\,(-1)^k$ (fact 1). Collecting the coefficient of $c_k$, $-(1/\theta)
# \sqrt{(2n+1)(2k+1)}\,[(-1)^{n+k} + 2\cdot\mathbb{1}\{k<n,\ n-k\text{ odd}\}]$, gives
#
# $$
# c'(t) = \frac{1}{\theta}\big(A\, c(t) + B\, u(t)\big),
# $$ (hippo-legt-ode)
#
# $$
# A_{nk} = -\sqrt{(2n+1)(2k+1)}\begin{cases} 1 & n \ge k \\ (-1)^{n-k} & n < k \end{cases},
# \qquad B_n = \sqrt{2n+1} .
# $$ (hippo-legt)
#
# This time the ODE is exact only when the window's content lies in the span of the
# polynomials, e.g. when $u$ is a polynomial of degree $< N$; otherwise the reconstruction of
# $u(t-\theta)$ is an approximation.
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: hippo_legt
# ```
#
# The same numerical check, for a cubic (exact) and for the smooth input above (approximate):

# %%
def u_cubic(s):
    return 1.0 - 0.3 * s + 0.02 * s**2 - 0.0005 * s**3


A_t, B_t = ssm.hippo(N, "legt")
theta, t = 3.0, 5.0
gaps = {}
for name, u in [("cubic", u_cubic), ("smooth", u_smooth)]:
    dc_dt = (project(u, t + eps - theta, t + eps, N) - project(u, t - eps - theta, t - eps, N)) / (2 * eps)
    rhs = (A_t @ project(u, t - theta, t, N) + B_t * u(torch.tensor(t))) / theta
    gaps[name] = float((dc_dt - rhs).abs().max())
assert gaps["cubic"] < 1e-7 and gaps["smooth"] > 1e-4
print(f"LegT: exact for the cubic (gap < 1e-7), approximate for the smooth input (gap {gaps['smooth']:.4f})")

# %% [markdown]
# ## Running HiPPO online
#
# To run the memory on a sampled signal we discretize the ODEs with chapter 1's tools. LegT
# {eq}`hippo-legt-ode` is time-invariant: one ZOH {eq}`zoh` of $(A/\theta, B/\theta)$ with a step
# of one sample. LegS {eq}`hippo-legs-ode` has a $1/t$ in front, but in the logarithmic clock
# $\tau = \log t$ (so $d\tau = dt/t$) it becomes time-invariant too:
#
# $$
# \frac{dc}{d\tau} = A\, c + B\, u(e^{\tau}) .
# $$ (hippo-legs-log)
#
# Samples $u_k$ held on $(k-1, k]$ are then held on $(\log(k-1), \log k]$, and ZOH with step
# $\Delta_k = \log\frac{k}{k-1}$ integrates each interval *exactly*. (The HiPPO paper
# discretizes {eq}`hippo-legs-ode` directly, with Euler or bilinear steps in $t$
# {cite}`gu2020hippo`.) The first interval $(0, 1]$ holds a constant, whose projection is
# $c = u_1 e_0$. The step sizes $\Delta_k$ all differ, so we discretize them in one batched
# call — the channel dimension of `ssm.discretize`:
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: hippo_coefficients
# ```
#
# ```{literalinclude} ../ssm/hippo.py
# :pyobject: hippo_reconstruct
# ```
#
# Our test signal is a sum of six sinusoids with random frequencies (1 to 11 cycles over the
# record), sampled at $L = 1000$ points. We run LegS with $N = 64$ and, at three moments,
# reconstruct the whole history seen so far from the 64 numbers of the state.

# %%
L = 1000
g = torch.Generator().manual_seed(0)
freqs = torch.rand(6, generator=g) * 10 + 1
phases = torch.rand(6, generator=g) * 2 * torch.pi
amps = torch.randn(6, generator=g) / freqs**0.5


def signal(s):
    """The test signal on s in [0, 1] (s = 1 is the end of the record)."""
    return (amps[:, None] * torch.sin(2 * torch.pi * freqs[:, None] * s + phases[:, None])).sum(0)


def midpoints(k, L=L):
    """Positions in [0, 1] of the first k samples of a record of length L (sample j holds (j-1, j])."""
    return (torch.arange(1, k + 1) - 0.5) / L


u = signal(midpoints(L))
c = ssm.hippo_coefficients(u, 64, "legs")

fig, axes = plt.subplots(1, 3, figsize=(11, 3), sharey=True)
for ax, k in zip(axes, [250, 500, 1000]):
    ax.plot(midpoints(L) * L, u, color="0.8", lw=3, label="signal")
    ax.plot(torch.linspace(0, k, 400), ssm.hippo_reconstruct(c[k - 1], 400), label="LegS memory, N = 64")
    ax.axvline(k, color="0.4", ls=":")
    ax.set(title=f"reconstructed at step {k}", xlabel="step")
axes[0].legend(loc="lower left")
plt.tight_layout()
plt.show()


# %%
def history_rmse(c_k, u_seen):
    """RMS error of the LegS reconstruction of the first k samples from c_k (at the midpoints)."""
    k = len(u_seen)
    x = 2 * (torch.arange(1, k + 1) - 0.5) / k - 1
    return float((ssm.legendre_basis(len(c_k), x) @ c_k - u_seen).pow(2).mean().sqrt())


errors_legs = [history_rmse(c[k - 1], u[:k]) for k in (250, 500, 1000)]
print("RMS error of the reconstructed history:", ", ".join(f"{e:.1e}" for e in errors_legs))
assert max(errors_legs) < 0.001 * float(u.pow(2).mean().sqrt())

# %% [markdown]
# With 64 coefficients the whole history — up to 11 oscillations — is reconstructed to less
# than 0.1 % of the signal's RMS value (asserted), at each of the three moments. How many coefficients does
# it take? The error of the final reconstruction as $N$ grows:

# %%
Ns = [4, 8, 16, 24, 32, 48, 64]
errors_N = [history_rmse(ssm.hippo_coefficients(u, n, "legs")[-1], u) for n in Ns]
for n, e in zip(Ns, errors_N):
    print(f"N = {n:2d}: RMS error {e:.2e}")
assert all(e1 > e2 for e1, e2 in zip(errors_N[:-1], errors_N[1:-1]))  # decreasing up to N = 48
assert errors_N[-2] < errors_N[1] / 1000  # N = 48 against N = 8
assert abs(errors_N[-1] - errors_N[-2]) < 0.05 * errors_N[-2]  # the floor: N = 64 within 5 % of N = 48

fig, ax = plt.subplots()
ax.semilogy(Ns, errors_N, "o-")
ax.set(xlabel="state size $N$", ylabel="RMS error of the reconstruction", title="LegS: error of the remembered history")
plt.show()

# %% [markdown]
# The error decreases with $N$ and falls by more than a factor of 1000 from $N = 8$ to
# $N = 48$ (both asserted). It stays high while $N$ is too small to resolve the signal's fastest
# oscillation over the record, then drops quickly — a smooth signal is approximated by
# polynomials with an error that decays fast once $N$ exceeds a few points per oscillation —
# until it reaches a floor (asserted: $N = 64$ is within 5 % of $N = 48$). The floor is not the
# memory's: the memory holds the projection of the *sampled*, piecewise-constant signal
# exactly, and what remains is the difference between that staircase and its polynomial
# approximation, which shrinks only as $L$ grows.
#
# ## LegS versus LegT
#
# LegT spends its $N$ coefficients on the last $\theta$ steps only. On the same signal, with
# the same $N = 32$ and a window of $\theta = 250$ steps:

# %%
n, theta = 32, 250.0
c_legs = ssm.hippo_coefficients(u, n, "legs")[-1]
c_legt = ssm.hippo_coefficients(u, n, "legt", theta=theta)[-1]
window = torch.arange(L - int(theta), L)
x_window = 2 * (window + 0.5 - L) / theta + 1  # LegT coordinates of the window's midpoints
x_all = 2 * (window + 0.5) / L - 1  # LegS coordinates of the same samples
err_legt = float((ssm.legendre_basis(n, x_window) @ c_legt - u[window]).pow(2).mean().sqrt())
err_legs = float((ssm.legendre_basis(n, x_all) @ c_legs - u[window]).pow(2).mean().sqrt())
print(f"RMS error on the last {int(theta)} steps: LegT {err_legt:.4f}, LegS {err_legs:.4f}")
assert err_legt < err_legs / 5

fig, ax = plt.subplots(figsize=(9, 3.2))
ax.plot(u, color="0.8", lw=3, label="signal")
ax.plot(torch.linspace(0, L, 400), ssm.hippo_reconstruct(c_legs, 400), label="LegS, N = 32: the whole history")
ax.plot(torch.linspace(L - theta, L, 200), ssm.hippo_reconstruct(c_legt, 200), label=rf"LegT, N = 32: the last $\theta$ = {int(theta)} steps")
ax.axvspan(L - theta, L, color="C1", alpha=0.08)
ax.set(xlabel="step", title="what each memory remembers at step 1000")
ax.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# On the window, LegT's reconstruction is more than five times more accurate than LegS's
# (asserted): it concentrates the same 32 coefficients on a quarter of the record. What came
# before the window, LegT has forgotten by design, and it needs to be told $\theta$ in advance.
# LegS needs no window, at the price of a resolution that coarsens as the history grows.
#
# ## Timescale robustness
#
# LegS has no timescale at all. Stretch the input in time — play the same signal $\alpha$ times
# slower, $u_\alpha(s) = u(s/\alpha)$ — and the projection onto the stretched interval
# $[0, \alpha t]$ is unchanged: substituting $s = \alpha s'$ in the definition of $c_n$ gives
# $c(\alpha t)$ for $u_\alpha$ equal to $c(t)$ for $u$. In the logarithmic clock
# {eq}`hippo-legs-log` stretching is just a shift of $\tau$ by $\log\alpha$, to which a
# time-invariant system does not react. LegT's window, fixed in steps, covers a different
# part of each stretched signal. We feed the signal at three speeds ($L = 250, 1000, 4000$
# samples for the same curve) to both memories, $N = 32$, $\theta = 200$ steps:

# %%
coefficients = {}
for L_alpha in [250, 1000, 4000]:
    u_alpha = signal(midpoints(L_alpha, L_alpha))
    coefficients[L_alpha] = (
        ssm.hippo_coefficients(u_alpha, n, "legs")[-1],
        ssm.hippo_coefficients(u_alpha, n, "legt", theta=200.0)[-1],
    )
gap_legs = max(float((coefficients[a][0] - coefficients[1000][0]).abs().max()) for a in [250, 4000])
gap_legt = max(float((coefficients[a][1] - coefficients[1000][1]).abs().max()) for a in [250, 4000])
scale_c = float(coefficients[1000][0].abs().max())
print(f"largest change of a coefficient when the signal is stretched: LegS {gap_legs:.4f}, LegT {gap_legt:.4f}"
      f" (largest coefficient {scale_c:.4f})")
assert gap_legs < 0.01 * scale_c and gap_legt > 0.5 * scale_c

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
for L_alpha, (c_s, c_t) in coefficients.items():
    ax0.plot(c_s, "o-", ms=3, label=f"L = {L_alpha}")
    ax1.plot(c_t, "o-", ms=3, label=f"L = {L_alpha}")
ax0.set(title="LegS coefficients at the end", xlabel="$n$", ylabel="$c_n$")
ax1.set(title=r"LegT coefficients at the end ($\theta$ = 200 steps)", xlabel="$n$")
ax0.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The three LegS curves coincide: a stretch changes no coefficient by more than 1 % of the
# largest one (asserted; what remains is the $O(1/L)$ difference between the three sampled,
# piecewise-constant versions of the curve). The LegT coefficients change completely
# (asserted: by more than half the largest LegS coefficient).
#
# ## Why the raw HiPPO matrix is hard to compute with
#
# HiPPO tells us *which* $A$ to use; computing with it is another matter. Chapter 1's
# convolutional view needs the kernel $\bar K_\ell = C\bar A^\ell \bar B$ for $\ell < L$. Done
# naively (`ssm.ssm_kernel`) that is $L$ matrix–vector products, $O(N^2 L)$ — too slow for long
# sequences. For a *diagonal* $\bar A = \operatorname{diag}(\bar\lambda)$ the kernel is a cheap
# sum of geometric sequences, $\bar K_\ell = \sum_n C_n \bar B_n \bar\lambda_n^\ell$. So why not
# diagonalize, $A = V \Lambda V^{-1}$?
#
# The LegS matrix is lower triangular, so its eigenvalues are its diagonal, $-1, -2, \dots, -N$:
# real, distinct, and spread over a factor $N$ (the system is stiff). But $A$ is far from
# **normal** ($A A^\top \ne A^\top A$): its eigenvectors are nearly parallel, and the matrix $V$
# that diagonalizes it is exponentially ill-conditioned {cite}`trefethen2005spectra`. We
# measure the condition number $\kappa(V) = \lVert V\rVert\,\lVert V^{-1}\rVert$ and the error of
# the kernel computed through the diagonalization, in float64, against the naive kernel.

# %%
# NBVAL_IGNORE_OUTPUT
# The digits below come from round-off amplified by up to 1e19: they differ between machines.
Ns_cond = [4, 8, 12, 16, 24, 32]
conds, kernel_errors = [], []
for n in Ns_cond:
    A, B = ssm.hippo(n, "legs")
    assert torch.allclose(torch.linalg.eigvals(A).real.sort().values, -torch.arange(n, 0, -1.0))
    A_bar, B_bar = ssm.discretize(A, B, 0.01, "zoh")
    C = torch.ones(n)
    K_naive = ssm.ssm_kernel(A_bar, B_bar, C, 200)
    lam, V = torch.linalg.eig(A_bar)
    B_diag = torch.linalg.solve(V, B_bar.to(V.dtype))
    C_diag = C.to(V.dtype) @ V
    K_diag = ((C_diag * B_diag)[:, None] * lam[:, None] ** torch.arange(200)).sum(0).real
    conds.append(float(torch.linalg.cond(V)))
    kernel_errors.append(float((K_diag - K_naive).abs().max() / K_naive.abs().max()))
    print(f"N = {n:2d}: cond(V) = {conds[-1]:.1e}, relative kernel error {kernel_errors[-1]:.1e}")

fig, ax = plt.subplots()
ax.semilogy(Ns_cond, conds, "o-", label=r"$\kappa(V)$")
ax.semilogy(Ns_cond, kernel_errors, "s-", label="relative error of the diagonalized kernel")
ax.set(xlabel="state size $N$", title="diagonalizing HiPPO-LegS in float64")
ax.legend()
plt.show()

# %%
assert all(c2 > 100 * c1 for c1, c2 in zip(conds[:3], conds[1:4]))  # N = 4, 8, 12, 16
assert conds[-1] > 1e15 and kernel_errors[-1] > 1.0
assert kernel_errors[0] < 1e-10

# %% [markdown]
# The condition number grows exponentially with $N$ — by more than a factor of 100 for every
# four states added, from $N = 4$ to $16$ — and is past $10^{15}$ at $N = 32$, where the
# diagonalized kernel is wrong by more than 100 % (both asserted), while at $N = 4$ it is
# accurate to $10^{-10}$. Diagonalization is numerically useless for HiPPO.
#
# The way out, which chapter 3 builds S4 on, is that $A$ is *almost* normal: adding a rank-one
# term makes it normal. With $P_n = \sqrt{n + 1/2}$,
#
# $$
# A + P P^\top = -\tfrac{1}{2} I + S, \qquad S^\top = -S ,
# $$ (hippo-legs-nplr)
#
# since $P_n P_k = \tfrac12\sqrt{(2n+1)(2k+1)}$ halves the strictly lower triangle, fills the
# strictly upper one with its mirror image of opposite sign, and turns the diagonal $-(n+1)$
# into $-(n+1) + (n + \tfrac12) = -\tfrac12$. A skew-symmetric $S$ is normal, so it is
# diagonalized by a *unitary* matrix (condition number 1). This "normal plus low-rank" form is
# where chapter 3 starts.

# %%
n = 64
A, _ = ssm.hippo(n, "legs")
P = torch.sqrt(torch.arange(n) + 0.5)
S = A + torch.outer(P, P) + 0.5 * torch.eye(n)
torch.testing.assert_close(S, -S.T, rtol=0, atol=1e-12)
lam_S, V_S = torch.linalg.eigh(1j * S)  # i S is Hermitian: a unitary eigenbasis
torch.testing.assert_close(V_S.conj().T @ V_S, torch.eye(n, dtype=V_S.dtype), rtol=0, atol=1e-10)
print(f"N = {n}: A + P P^T + I/2 is skew-symmetric; its eigenvector matrix is unitary, cond = "
      f"{float(torch.linalg.cond(V_S)):.4f}")

# %% [markdown]
# ## Summary
#
# * HiPPO defines the state as the coefficients of an optimal polynomial approximation of the
#   input's history and derives the dynamics that maintain it: LegS {eq}`hippo-legs` for the
#   whole history, LegT {eq}`hippo-legt` for a sliding window.
# * Run online, 64 LegS coefficients reconstruct a signal's history to better than 0.1 %; LegS
#   is invariant to stretching the input in time, because it is time-invariant in
#   $\log t$ {eq}`hippo-legs-log`.
# * The LegS matrix is stiff and strongly non-normal: diagonalizing it fails in float64
#   already at $N = 32$. It is, however, normal plus rank one {eq}`hippo-legs-nplr` — the
#   structure S4 exploits in chapter 3.

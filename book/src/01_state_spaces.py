# %% [markdown]
# # 1. State spaces
#
# A *state space model* (SSM) describes a system by a small vector, the **state**, that
# summarises everything about the past the system needs to produce its future. This chapter
# derives the three ways of computing one — as a differential equation, as a recurrence and
# as a convolution — and checks, cell by cell, that they agree. Everything later in the book
# (S4 {cite}`gu2022s4`, S4D {cite}`gu2022s4d`, Mamba {cite}`gu2023mamba`) is one of these three
# views made fast. The discretization rules are the classical ones of digital control
# {cite}`franklin1998digital`, and the convolution theorem is that of signal processing
# {cite}`oppenheim2010discrete`; linear state space layers in deep learning start with
# {cite}`gu2021lssl`.
#
# We work in float64 in this chapter: every check below is a derivation check, so we want
# rounding errors near $10^{-15}$, not $10^{-7}$.

# %%
%matplotlib inline

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.integrate import solve_ivp

import ssm

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_default_dtype(torch.float64)

# %% [markdown]
# ## The continuous model
#
# A continuous-time, linear, time-invariant SSM maps an input signal $u(t) \in \mathbb{R}$ to
# an output $y(t) \in \mathbb{R}$ through a state $x(t) \in \mathbb{R}^N$:
#
# $$
# x'(t) = A\,x(t) + B\,u(t), \qquad y(t) = C\,x(t) + D\,u(t),
# $$ (s1-ssm)
#
# with a state matrix $A \in \mathbb{R}^{N\times N}$, an input vector $B \in \mathbb{R}^{N}$, an
# output vector $C \in \mathbb{R}^{N}$ (used as a row) and a scalar skip term $D$. The skip
# term $Du$ is a plain residual connection; we set $D = 0$ from now on and add it back in the
# layers of later chapters.
#
# **A picture to keep in mind: a damped mass on a spring.** A mass $m$ at position $q(t)$,
# held by a spring of stiffness $k$ and a damper of coefficient $c$, pushed by a force $u(t)$,
# obeys Newton's law $m q'' = -k q - c q' + u$. Choose the state $x = (q, q')$ — position and
# velocity — and this second-order equation becomes {eq}`s1-ssm` with
#
# $$
# A = \begin{pmatrix} 0 & 1 \\ -k/m & -c/m \end{pmatrix}, \qquad
# B = \begin{pmatrix} 0 \\ 1/m \end{pmatrix}, \qquad C = \begin{pmatrix} 1 & 0 \end{pmatrix}.
# $$
#
# We take $m = 1$, $k = 4$ (natural frequency $\omega_0 = \sqrt{k/m} = 2$) and $c = 0.4$ (damping
# ratio $\zeta = c / (2 m \omega_0) = 0.1$): a lightly damped oscillator.

# %%
m, k, c = 1.0, 4.0, 0.4
A = torch.tensor([[0.0, 1.0], [-k / m, -c / m]])
B = torch.tensor([0.0, 1.0 / m])
C = torch.tensor([1.0, 0.0])
omega0, zeta = (k / m) ** 0.5, c / (2 * m * (k / m) ** 0.5)
omega_d = omega0 * (1 - zeta**2) ** 0.5  # the frequency at which the damped mass oscillates
print(f"omega0 = {omega0:.4f}, zeta = {zeta:.4f}, omega_d = {omega_d:.4f}")

# %% [markdown]
# ### Solution, impulse response and stability
#
# Multiply {eq}`s1-ssm` by $e^{-At}$: the left side $e^{-At}(x' - Ax)$ is the derivative of
# $e^{-At}x(t)$, so integrating from $0$ to $t$ gives the **variation of constants** formula
#
# $$
# x(t) = e^{At}\,x(0) + \int_0^t e^{A(t-s)}\,B\,u(s)\,ds .
# $$ (s1-voc)
#
# From a resting state $x(0) = 0$ the output is therefore a convolution of the input with the
# **impulse response** (the continuous kernel)
#
# $$
# y(t) = \int_0^t K(t-s)\,u(s)\,ds, \qquad K(t) = C\,e^{At}\,B .
# $$ (s1-impulse)
#
# If $A = V \Lambda V^{-1}$ with eigenvalues $\lambda_1, \dots, \lambda_N$, then
# $e^{At} = V e^{\Lambda t} V^{-1}$ and every entry of $K(t)$ is a combination of
# $e^{\lambda_n t}$. The system is **stable** — its response to a bounded input stays bounded,
# and the memory of the initial state fades — exactly when every eigenvalue has
# $\operatorname{Re}\lambda_n < 0$. For the mass–spring the eigenvalues are
# $\lambda = -\zeta\omega_0 \pm i\,\omega_d$ with $\omega_d = \omega_0\sqrt{1-\zeta^2}$, and
# solving the second-order equation by hand gives
# $K(t) = e^{-\zeta\omega_0 t}\sin(\omega_d t)/(m\,\omega_d)$. We check both against the
# matrix exponential.

# %%
eigenvalues = torch.linalg.eigvals(A)
print("eigenvalues of A:", [f"{z.real:.4f}{z.imag:+.4f}i" for z in eigenvalues.tolist()])
assert torch.allclose(eigenvalues.real, torch.full((2,), -zeta * omega0))
assert torch.allclose(eigenvalues.imag.abs(), torch.full((2,), omega_d))

t = torch.linspace(0, 20, 401)
K_expm = torch.stack([C @ torch.linalg.matrix_exp(A * t_i) @ B for t_i in t])
K_closed = torch.exp(-zeta * omega0 * t) * torch.sin(omega_d * t) / (m * omega_d)
torch.testing.assert_close(K_expm, K_closed, rtol=1e-10, atol=1e-12)
gap = (K_expm - K_closed).abs().max()
print(f"max |C exp(At) B - closed form| < 1e-12: {bool(gap < 1e-12)}")

# %% [markdown]
# Both agree to rounding error. With a *negative* damping coefficient ($c = -0.2$, a spring that
# pumps energy in) the eigenvalues cross into the right half-plane and the same response grows
# like $e^{0.1 t}$, without bound (by more than five times between the first and the last
# 2.5 time units shown, asserted):

# %%
A_unstable = torch.tensor([[0.0, 1.0], [-k / m, 0.2 / m]])
K_unstable = torch.stack([C @ torch.linalg.matrix_exp(A_unstable * t_i) @ B for t_i in t])
assert (torch.linalg.eigvals(A_unstable).real > 0).all()
assert K_unstable.abs()[-50:].max() > 5 * K_unstable.abs()[:50].max()

fig, ax = plt.subplots()
ax.plot(t, K_closed, label=r"stable: $c = 0.4$, Re $\lambda = -0.2$")
ax.plot(t, K_unstable, label=r"unstable: $c = -0.2$, Re $\lambda = +0.1$", ls="--")
ax.set(xlabel="time $t$", ylabel="$K(t) = C e^{At} B$", title="impulse response of the mass–spring")
ax.legend()
plt.show()

# %% [markdown]
# ## Discretization
#
# A computer sees the input only at samples $u_k$, $k = 0, 1, \dots, L-1$, spaced by a **step
# size** $\Delta$. Discretizing {eq}`s1-ssm` means finding $\bar A$, $\bar B$ such that the
# discrete state $h_k \approx x((k+1)\Delta)$ follows the recurrence
# $h_k = \bar A h_{k-1} + \bar B u_k$ from $h_{-1} = 0$. We read $u_k$ as the input on the
# interval $(k\Delta, (k+1)\Delta]$. Three rules, from crude to exact:
#
# **Forward Euler.** Replace the derivative by a forward difference,
# $x(t+\Delta) \approx x(t) + \Delta\, x'(t) = x(t) + \Delta (A x(t) + B u)$:
#
# $$
# \bar A = I + \Delta A, \qquad \bar B = \Delta B .
# $$ (euler)
#
# **Bilinear (Tustin).** Integrate $x' = Ax + Bu$ over one step with the trapezoidal rule,
# $x_k - x_{k-1} = \tfrac{\Delta}{2}(A x_k + A x_{k-1}) + \Delta B u_k$, and solve for $x_k$:
#
# $$
# \bar A = \left(I - \tfrac{\Delta}{2} A\right)^{-1}\left(I + \tfrac{\Delta}{2} A\right), \qquad
# \bar B = \left(I - \tfrac{\Delta}{2} A\right)^{-1} \Delta B .
# $$ (bilinear)
#
# This is the rule S4 uses {cite}`gu2022s4`.
#
# **Zero-order hold (ZOH).** If the input really is constant on each step (a digital
# controller holds its output — hence the name), no approximation is needed at all: apply
# {eq}`s1-voc` from $t = k\Delta$ to $(k+1)\Delta$ with $u(s) = u_k$,
#
# $$
# x((k+1)\Delta) = e^{\Delta A} x(k\Delta) + \int_0^{\Delta} e^{A s}\,ds\; B\, u_k,
# \qquad
# \bar A = e^{\Delta A}, \quad \bar B = \int_0^{\Delta} e^{A s} ds\, B = A^{-1}\left(e^{\Delta A} - I\right) B,
# $$ (zoh)
#
# the last form when $A$ is invertible (differentiate $A^{-1} e^{As}$ to see it). Note the
# $-I$: a common bug writes $(\bar A - A)$ instead. For a diagonal $A$ every entry is a scalar,
# $\bar B_n = (e^{\Delta a_n} - 1)/a_n \cdot B_n$. S4D and Mamba use ZOH {cite}`gu2022s4d,gu2023mamba`.
#
# The package implements the three rules as three short functions and a dispatcher that
# checks its input. A diagonal $A$ is passed as the vector of its diagonal, and a `dt` with a
# channel dimension $(H,)$ gives $H$ discretized systems at once.
#
# ```{literalinclude} ../ssm/discretize.py
# :pyobject: euler
# ```
#
# ```{literalinclude} ../ssm/discretize.py
# :pyobject: bilinear
# ```
#
# ```{literalinclude} ../ssm/discretize.py
# :pyobject: zoh
# ```
#
# For a dense $A$, `zoh` does not invert $A$: the exponential of the block matrix
# $\Delta\begin{pmatrix} A & B \\ 0 & 0\end{pmatrix}$ is
# $\begin{pmatrix} e^{\Delta A} & \int_0^\Delta e^{As}ds\,B \\ 0 & 1\end{pmatrix}$
# (expand the series of the exponential), which gives both $\bar A$ and $\bar B$ in one call and
# works even when $A$ is singular. We check it against the formula with $A^{-1}$:

# %%
dt = 0.1
A_bar, B_bar = ssm.discretize(A, B, dt, method="zoh")
B_bar_inverse = torch.linalg.solve(A, (torch.linalg.matrix_exp(dt * A) - torch.eye(2)) @ B)
torch.testing.assert_close(B_bar, B_bar_inverse, rtol=1e-12, atol=1e-14)
print("A_bar =", [[f"{v:.4f}" for v in row] for row in A_bar.tolist()])
print("B_bar =", [f"{v:.4f}" for v in B_bar.tolist()])

# %% [markdown]
# ### How accurate is each rule?
#
# Push the mass with a constant force $u = 1$ from rest. The exact position (the *step
# response*) follows from {eq}`s1-voc`:
# $q(t) = \frac{1}{k}\left[1 - e^{-\zeta\omega_0 t}\left(\cos\omega_d t +
# \frac{\zeta\omega_0}{\omega_d}\sin\omega_d t\right)\right]$. We run the recurrence with each
# rule and compare at the sample times $t = (k+1)\Delta$.


# %%
def run_recurrence(A_bar, B_bar, C, u):
    """The recurrent view: h_k = A_bar h_{k-1} + B_bar u_k, y_k = C h_k, from h_{-1} = 0."""
    h, y = torch.zeros_like(B_bar), []
    for u_k in u:
        h = A_bar @ h + B_bar * u_k
        y.append(C @ h)
    return torch.stack(y)


def step_response(t):
    decay = torch.exp(-zeta * omega0 * t)
    return (1 - decay * (torch.cos(omega_d * t) + zeta * omega0 / omega_d * torch.sin(omega_d * t))) / k


def max_error(method, dt, T=10.0):
    L = round(T / dt)
    y = run_recurrence(*ssm.discretize(A, B, dt, method), C, torch.ones(L))
    return float((y - step_response(dt * torch.arange(1, L + 1))).abs().max())


methods = ["euler", "bilinear", "zoh"]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), sharey=True)
for ax, dt in zip(axes, [0.02, 0.1, 0.3]):
    L = round(10 / dt)
    t_k = dt * torch.arange(1, L + 1)
    ax.plot(t, step_response(t), color="0.6", lw=4, label="exact")
    for method in methods:
        y = run_recurrence(*ssm.discretize(A, B, dt, method), C, torch.ones(L))
        ax.plot(t_k, y, ".-", ms=3, lw=0.8, label=method)
    ax.set(title=rf"$\Delta = {dt}$", xlabel="time $t$", xlim=(0, 10), ylim=(-0.2, 0.6))
axes[0].set_ylabel("position $q$")
axes[0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# At $\Delta = 0.02$ all three follow the exact curve; at $\Delta = 0.3$ Euler has blown up.
# Measuring the largest error over $t \in [0, 10]$ as $\Delta$ shrinks shows the *order* of each
# rule: Euler's error falls like $\Delta$, bilinear's like $\Delta^2$ (the trapezoidal rule is
# second order; $\bar A$ is the $(1,1)$ Padé approximant of $e^{\Delta A}$), and ZOH is exact
# for this input at every $\Delta$ up to rounding: below $10^{-9}$ at every $\Delta$, even after
# 10 000 steps, where Euler is off by $10^{-3}$. (The ZOH points are rounding noise; they
# wander with the accuracy of the float64 matrix exponential.)

# %%
dts = np.logspace(-3, -1.5, 4)
errors = {method: np.array([max_error(method, dt) for dt in dts]) for method in methods}
slopes = {method: np.polyfit(np.log(dts), np.log(errors[method]), 1)[0] for method in methods[:2]}
for method in methods[:2]:
    print(f"{method:9s} max error at dt = 1e-3: {errors[method][0]:.1e}, at dt = 0.03: {errors[method][-1]:.1e}")
print(f"zoh       max error over all dt < 1e-9: {bool(errors['zoh'].max() < 1e-9)}")
print(f"fitted orders: euler {slopes['euler']:.2f}, bilinear {slopes['bilinear']:.2f}")
assert 0.9 < slopes["euler"] < 1.1 and 1.9 < slopes["bilinear"] < 2.1
# ZOH is exact here; what remains is the float64 rounding of the matrix exponential
# (torch's is accurate to about 1e-12 at these norms) accumulated over up to 10 000 steps.
assert errors["zoh"].max() < 1e-9

fig, ax = plt.subplots()
for method in methods:
    ax.loglog(dts, np.maximum(errors[method], 1e-17), "o-", label=method)
ax.set(xlabel=r"step size $\Delta$", ylabel="max error of the step response", title="order of accuracy")
ax.legend()
plt.show()

# %% [markdown]
# ### Where the unit circle maps: stability
#
# The recurrence $h_k = \bar A h_{k-1} + \dots$ forgets its past when every eigenvalue of
# $\bar A$ lies inside the unit circle, $|\bar\lambda| < 1$. Each rule maps an eigenvalue
# $\lambda$ of $A$ to one of $\bar A$ by a scalar function of $z = \Delta\lambda$:
#
# * Euler: $\bar\lambda = 1 + z$. Stable only inside the disk $|1 + z| < 1$, of radius 1 around
#   $-1$. A stable continuous system becomes unstable when $\Delta$ is too large: for
#   $\lambda = -\zeta\omega_0 \pm i\omega_d$, $|1 + \Delta\lambda|^2 < 1$ exactly when
#   $\Delta < 2\zeta\omega_0 / |\lambda|^2 = 2\zeta/\omega_0 = 0.1$.
# * Bilinear: $\bar\lambda = (1 + z/2)/(1 - z/2)$. Since
#   $|1 + z/2|^2 - |1 - z/2|^2 = 2\operatorname{Re} z$, the left half-plane maps *onto* the
#   open unit disk and the imaginary axis onto the unit circle: stable stays stable for every $\Delta$.
# * ZOH: $\bar\lambda = e^{z}$, $|\bar\lambda| = e^{\operatorname{Re} z} < 1$ exactly when
#   $\operatorname{Re}\lambda < 0$: also stable for every $\Delta$.

# %%
def spectral_radius(method, dt):
    return float(torch.linalg.eigvals(ssm.discretize(A, B, dt, method)[0]).abs().max())


assert spectral_radius("euler", 0.099) < 1 < spectral_radius("euler", 0.101)
dt_grid = np.linspace(0.01, 3.0, 300)
for method in ["bilinear", "zoh"]:
    assert max(spectral_radius(method, dt) for dt in dt_grid) < 1
print(f"euler: spectral radius {spectral_radius('euler', 0.099):.6f} at dt = 0.099, "
      f"{spectral_radius('euler', 0.101):.6f} at dt = 0.101")

fig, ax = plt.subplots(figsize=(5.5, 5))
circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200))
ax.plot(circle.real, circle.imag, color="0.5", lw=1, label="unit circle")
z = dt_grid * complex(eigenvalues[0])
for name, mapped in [("euler", 1 + z), ("bilinear", (1 + z / 2) / (1 - z / 2)), ("zoh", np.exp(z))]:
    ax.plot(mapped.real, mapped.imag, label=name)
ax.plot(1, 0, "k.", ms=8)
ax.annotate(r"$\Delta \to 0$", (1, 0), xytext=(1.1, -0.3))
ax.set(xlim=(-1.5, 2), ylim=(-1.2, 2.5), aspect="equal", title=r"$\bar\lambda$ as $\Delta$ grows from 0 to 3")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# All three curves leave $\bar\lambda = 1$ in the same direction (they agree to first order in
# $\Delta$); Euler's straight line leaves the unit circle almost at once, while bilinear and ZOH
# spiral inwards.
#
# ## The recurrent and the convolutional views
#
# Once discretized, the model can be run in two ways. The **recurrent view** is the loop
# `run_recurrence` above: $O(N^2)$ work per step and a constant memory, ideal for generating
# one step at a time. Unrolling the loop from $h_{-1} = 0$,
# $h_k = \sum_{\ell=0}^{k} \bar A^{\ell}\bar B\,u_{k-\ell}$, gives the **convolutional view**
#
# $$
# y_k = \sum_{\ell=0}^{k} \bar K_\ell\, u_{k-\ell}, \qquad
# \bar K = \left(C\bar B,\; C\bar A\bar B,\; \dots,\; C\bar A^{L-1}\bar B\right) \in \mathbb{R}^L ,
# $$ (ssm-kernel)
#
# the discrete counterpart of {eq}`s1-impulse`: $\bar K$ is the response to a unit impulse.
# The package computes $\bar K$ the slow, obvious way — it is the reference that the fast
# kernels of chapters 3 and 4 are tested against:
#
# ```{literalinclude} ../ssm/kernels.py
# :pyobject: ssm_kernel
# ```

# %%
L = 300
u = torch.randn(L)
A_bar, B_bar = ssm.discretize(A, B, 0.1, "zoh")
K = ssm.ssm_kernel(A_bar, B_bar, C, L)
y_recurrent = run_recurrence(A_bar, B_bar, C, u)
y_convolution = torch.stack([(K[: j + 1].flip(0) * u[: j + 1]).sum() for j in range(L)])
torch.testing.assert_close(y_recurrent, y_convolution, rtol=1e-12, atol=1e-12)
gap = (y_recurrent - y_convolution).abs().max()
print(f"max |recurrent - convolutional| < 1e-12: {bool(gap < 1e-12)}")

# %% [markdown]
# The two views agree to rounding error. With ZOH the discrete kernel is the continuous one
# integrated over each step: factoring $C e^{\ell\Delta A}$ into the integral of {eq}`zoh`,
# $\bar K_\ell = C e^{\ell\Delta A}\int_0^\Delta e^{As}ds\,B = \int_{\ell\Delta}^{(\ell+1)\Delta} K(s)\,ds$,
# about $\Delta\,K(\ell\Delta)$ for small $\Delta$. For the mass–spring, $K$ has the antiderivative
# $F(t) = -e^{-at}(a \sin\omega_d t + \omega_d\cos\omega_d t) / \big(m\,\omega_d (a^2 + \omega_d^2)\big)$
# with $a = \zeta\omega_0$, which checks this to rounding error:

# %%
a = zeta * omega0
t_l = 0.1 * torch.arange(L + 1)
F = -torch.exp(-a * t_l) * (a * torch.sin(omega_d * t_l) + omega_d * torch.cos(omega_d * t_l)) / (m * omega_d * (a**2 + omega_d**2))
torch.testing.assert_close(K, F[1:] - F[:-1], rtol=1e-10, atol=1e-13)
print(f"ZOH kernel = integral of K(t) over each step, to 1e-10 relative: {torch.allclose(K, F[1:] - F[:-1], rtol=1e-10, atol=1e-13)}")

# %% [markdown]
# ## Causal convolution with the FFT
#
# The convolutional view computed as a sum costs $O(L^2)$: every output sums up to $L$
# products. Writing out the sum we need,
#
# $$
# y_k = \sum_{\ell=0}^{k} \bar K_\ell\, u_{k-\ell}, \qquad k = 0, \dots, L-1,
# $$ (causal-conv)
#
# the fast Fourier transform (FFT) does it in $O(L \log L)$ through the convolution theorem
# {cite}`oppenheim2010discrete`: if $\hat u = \mathrm{DFT}_n(u)$ and $\hat K = \mathrm{DFT}_n(K)$ are
# discrete Fourier transforms of length $n$, then $\mathrm{DFT}_n^{-1}(\hat K \odot \hat u)$ is
# the **circular** convolution $\sum_{\ell=0}^{n-1} K_\ell\, u_{(k-\ell) \bmod n}$. With $n = L$
# the indices wrap around: for $\ell > k$ the term $K_\ell u_{k-\ell+L}$ — an input from the
# *future* — leaks into $y_k$. Padding both sequences with zeros to $n = 2L$ makes every
# wrapped index $k - \ell + 2L \ge L + 1$ point at a zero, so
#
# $$
# y = \left[\mathrm{DFT}_{2L}^{-1}\!\left(\mathrm{DFT}_{2L}(\bar K) \odot \mathrm{DFT}_{2L}(u)\right)\right]_{0:L} .
# $$ (fft-conv)
#
# ```{literalinclude} ../ssm/conv.py
# :pyobject: causal_conv
# ```
#
# To see the leak, hit the mass 20 steps before the end of the sequence. A causal system
# cannot move before it is hit; the circular convolution shows the mass ringing at the start.

# %%
u_late = torch.zeros(L)
u_late[L - 20] = 1.0
y_causal = ssm.causal_conv(u_late, K)
y_circular = torch.fft.irfft(torch.fft.rfft(u_late) * torch.fft.rfft(K), n=L)
torch.testing.assert_close(y_causal, run_recurrence(A_bar, B_bar, C, u_late), rtol=1e-10, atol=1e-12)
assert y_causal[: L - 20].abs().max() < 1e-12
j, l = torch.arange(L)[:, None], torch.arange(L)[None, :]
wrapped = torch.where(l > j, K[l] * u_late[(j - l) % L], 0.0).sum(1)  # sum_{l>j} K_l u_{j-l+L}
torch.testing.assert_close(y_circular - y_causal, wrapped, rtol=1e-10, atol=1e-12)
print("largest |y_k| before the hit: causal < 1e-12, "
      f"circular {y_circular[: L - 20].abs().max():.4f}")

fig, ax = plt.subplots()
ax.plot(y_circular, label="circular (no padding): wrong", color="C3")
ax.plot(y_causal, label="causal (padded to 2L)", color="C0", lw=2.5, alpha=0.8)
ax.axvline(L - 20, color="0.5", ls=":", label="the hit")
ax.set(xlabel="step $k$", ylabel="$y_k$", title="an impulse 20 steps before the end")
ax.legend()
plt.show()

# %% [markdown]
# The difference between the two is exactly the wrapped sum $\sum_{\ell > k} K_\ell u_{k-\ell+L}$,
# as asserted above. Now the cost. We time the direct $O(L^2)$ sum (`numpy.convolve`, a
# compiled double loop) against `causal_conv` on random float64 data, both on one core, keeping
# the fastest of seven runs. The timings are from the machine that executed this notebook, which may be
# shared with other jobs, so only their ratio and growth are meaningful.

# %%
# NBVAL_IGNORE_OUTPUT
lengths = [512, 1024, 2048, 4096, 8192, 16384]
t_direct, t_fft = [], []
threads = torch.get_num_threads()
torch.set_num_threads(1)  # numpy.convolve uses one core: compare like with like
for n in lengths:
    u_n, K_n = torch.randn(n), torch.randn(n)
    u_np, K_np = u_n.numpy(), K_n.numpy()
    np.testing.assert_allclose(ssm.causal_conv(u_n, K_n).numpy(), np.convolve(u_np, K_np)[:n], atol=1e-9)
    t_direct.append(ssm.best_time(lambda: np.convolve(u_np, K_np)[:n], repeats=7))
    t_fft.append(ssm.best_time(lambda: ssm.causal_conv(u_n, K_n), repeats=7))
    print(f"L = {n:5d}: direct {1e3 * t_direct[-1]:8.3f} ms, FFT {1e3 * t_fft[-1]:6.3f} ms")
torch.set_num_threads(threads)
speedup = t_direct[-1] / t_fft[-1]
growth_direct = np.polyfit(np.log(lengths[2:]), np.log(t_direct[2:]), 1)[0]
print(f"at L = 16384 the FFT is {speedup:.0f}x faster; direct time grows like L^{growth_direct:.2f}")

# %%
assert speedup > 5, speedup
assert growth_direct > 1.5, growth_direct

fig, ax = plt.subplots()
ax.loglog(lengths, t_direct, "o-", label="direct sum, $O(L^2)$")
ax.loglog(lengths, t_fft, "o-", label="FFT, $O(L \\log L)$")
ax.set(xlabel="sequence length $L$", ylabel="seconds (best of 7)", title="causal convolution on this machine")
ax.legend()
plt.show()

# %% [markdown]
# The direct sum grows at least quadratically: the exponent fitted from $L = 2048$ on is
# asserted to be above 1.5, and once the data no longer fit in the processor's caches it can
# exceed 2. The FFT is more than five times faster at $L = 16384$ (asserted; the measured factor
# is printed above the plot), and the gap widens with $L$.
#
# ## The mass–spring through all three views
#
# Finally, one physical simulation computed three ways. A controller pushes the mass with a
# force that it updates every $\Delta = 0.1$ and holds in between (a square wave plus noise).
# Because the force is held, ZOH is exact, and all three views must produce the same positions:
#
# 1. **continuous:** integrate $x' = Ax + Bu$ with an adaptive Runge–Kutta solver (scipy), one
#    hold interval at a time;
# 2. **recurrent:** `run_recurrence` with the ZOH matrices;
# 3. **convolutional:** $\bar K$ from `ssm_kernel`, then `causal_conv`.

# %%
dt, L = 0.1, 300
force = torch.sign(torch.sin(2 * torch.pi * torch.arange(L) * dt / 8)) + 0.3 * torch.randn(L)
A_bar, B_bar = ssm.discretize(A, B, dt, "zoh")

x, y_continuous = np.zeros(2), []
for u_k in force.tolist():
    sol = solve_ivp(lambda t, x, u_k=u_k: A.numpy() @ x + B.numpy() * u_k, (0, dt), x,
                    method="DOP853", rtol=1e-12, atol=1e-12)
    x = sol.y[:, -1]
    y_continuous.append(C.numpy() @ x)
y_continuous = torch.tensor(y_continuous)
y_recurrent = run_recurrence(A_bar, B_bar, C, force)
y_convolution = ssm.causal_conv(force, ssm.ssm_kernel(A_bar, B_bar, C, L))

torch.testing.assert_close(y_recurrent, y_continuous, rtol=0, atol=1e-9)
torch.testing.assert_close(y_convolution, y_recurrent, rtol=0, atol=1e-12)
print(f"max |recurrent - continuous|    < 1e-9:  {bool((y_recurrent - y_continuous).abs().max() < 1e-9)}")
print(f"max |convolutional - recurrent| < 1e-12: {bool((y_convolution - y_recurrent).abs().max() < 1e-12)}")

t_k = dt * torch.arange(1, L + 1)
fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(8, 4.5), sharex=True)
ax0.step(t_k, force, where="pre", color="0.5", lw=0.8)
ax0.set(ylabel="force $u$")
ax1.plot(t_k, y_continuous, color="0.6", lw=5, label="continuous (ODE solver)")
ax1.plot(t_k, y_recurrent, lw=2, label="recurrent (loop)")
ax1.plot(t_k, y_convolution, "k--", lw=1, label="convolutional (FFT)")
ax1.set(xlabel="time $t$", ylabel="position $q$")
ax1.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
plt.tight_layout()
plt.show()

# %% [markdown]
# The three curves lie on top of each other: the solver and the recurrence agree to the
# solver's tolerance ($< 10^{-9}$), the recurrence and the FFT convolution to rounding error
# ($< 10^{-12}$).
#
# ## Summary
#
# * An SSM {eq}`s1-ssm` is stable when the eigenvalues of $A$ have negative real parts; its
#   output is the input convolved with the impulse response $K(t) = Ce^{At}B$.
# * Discretization turns it into a recurrence. Euler {eq}`euler` is first order and can turn a
#   stable system unstable; bilinear {eq}`bilinear` is second order; ZOH {eq}`zoh` is exact for
#   held inputs. Bilinear and ZOH keep stable systems stable for every $\Delta$.
# * The recurrence equals a convolution with $\bar K_\ell = C\bar A^\ell\bar B$ {eq}`ssm-kernel`,
#   which the FFT computes in $O(L\log L)$ once both sequences are zero-padded to $2L$ {eq}`fft-conv`.
#
# What is missing is a good $A$. A random one forgets its input within a few steps. The next
# chapter derives an $A$ that is *designed* to remember: HiPPO.

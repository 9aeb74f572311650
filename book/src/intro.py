# %% [markdown]
# # State Space Models, Derived and Tested
#
# This book derives the state space models behind modern long-sequence architectures —
# S4 {cite}`gu2022s4`, its diagonal variants S4D {cite}`gu2022s4d` and DSS {cite}`gupta2022dss`,
# and the selective S6 layer of Mamba {cite}`gu2023mamba` — from first principles, together with
# the parallel scans that make S6 fast on GPUs.
#
# Two promises hold on every page:
#
# 1. **Every equation has code next to it.** The code is the `ssm` Python package, shown here
#    straight from its source file (never re-typed) and then executed.
# 2. **Every number you see was produced by that code and is checked.** A cell that states a fact
#    ends with an `assert`, and CI re-executes every chapter and compares its outputs with the
#    ones stored in the book.
#
# ## How to read and run it
#
# Clone the repository, then
#
# ```bash
# make test   # creates .venv, installs the pinned environment, runs the unit tests and every chapter
# make book   # builds this site into _build/html
# make lab    # opens the chapters in JupyterLab
# ```
#
# Everything runs on a laptop CPU; the same code runs on a GPU when one is present.
#
# ## The first idea, in one cell
#
# A state space model carries a state $h$ through time. In its simplest discrete form, one
# number $h_k$ summarises the past: $h_k = \bar a\, h_{k-1} + \bar b\, u_k$, and the output
# is $y_k = c\, h_k$. Unrolling the loop shows that the same output is a convolution of the input
# with the kernel $\bar K_\ell = c\, \bar a^{\ell}\, \bar b$:
#
# $$
# y_k = \sum_{\ell=0}^{k} c\, \bar a^{\ell}\, \bar b\; u_{k-\ell}.
# $$
#
# This equivalence of a *recurrence* and a *convolution* is the thread through the whole book.
# Chapter 1 derives it for matrices; here we check it for a scalar. Every chapter starts
# the same way, by fixing the seeds with the package's helper:
#
# ```{literalinclude} ../ssm/utils.py
# :pyobject: seed_everything
# ```

# %%
import matplotlib.pyplot as plt
import torch

import ssm

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_default_dtype(torch.float64)

# %% [markdown]
# A random input of length $L = 64$, a decaying state ($\bar a = 0.9$), and the two views:

# %%
L, a_bar, b_bar, c = 64, 0.9, 0.5, 2.0
u = torch.randn(L)

h, y_recurrent = 0.0, []
for u_k in u:
    h = a_bar * h + b_bar * u_k
    y_recurrent.append(c * h)
y_recurrent = torch.stack(y_recurrent)

K = c * a_bar ** torch.arange(L) * b_bar
y_convolution = torch.stack([(K[: k + 1].flip(0) * u[: k + 1]).sum() for k in range(L)])

# float64 rounding of 64 products and sums stays far below 1e-12 (values are O(1)).
gap = (y_recurrent - y_convolution).abs().max().item()
assert gap < 1e-12, gap
print(f"max |recurrent - convolution| < 1e-12: {gap < 1e-12}")

# %% [markdown]
# The two outputs agree to rounding error in float64. The kernel decays like $\bar a^\ell$:
# this model remembers about $1/(1-\bar a) = 10$ steps. Much of the book is about choosing $\bar A$
# (a matrix, later an input-dependent one) so that the memory is long *and* the kernel cheap to
# compute.

# %%
fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3))
ax0.stem(K[:30].numpy())
ax0.set(title=r"kernel $\bar K_\ell = c\,\bar a^\ell\,\bar b$", xlabel=r"lag $\ell$")
ax1.plot(u.numpy(), color="0.7", label="input $u$")
ax1.plot(y_recurrent.numpy(), label="output $y$ (both views)")
ax1.set(title="recurrent view = convolutional view", xlabel="step $k$")
ax1.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Map of the book
#
# | chapter | derives | package |
# |---|---|---|
# | 1 State spaces | continuous SSM, discretization, recurrent and convolutional views, FFT convolution | `ssm.discretize`, `ssm.ssm_kernel` |
# | 2 HiPPO | online function approximation with Legendre polynomials | `ssm.hippo` |
# | 3 S4 | the DPLR form, Cauchy kernel, Woodbury identity, the S4 layer | `ssm.dplr`, `ssm.s4_kernel` |
# | 4 S4D and DSS | diagonal state spaces and their initialisations | `ssm.s4d_init`, `ssm.s4d_kernel` |
# | 5 Selectivity | S6 and the Mamba block | `ssm.selective_scan` |
# | 6 Parallel scans | associative scans and their backward pass | `ssm.linear_scan` |
# | 7 Scans on GPUs | a Triton selective scan | `method="triton"` |
# | 8 Experiments | the models trained on tasks that separate them | `python -m ssm.train` |
#
# The [notation page](notation.md) lists every symbol with its code name and shape.

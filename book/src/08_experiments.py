# %% [markdown]
# # 8. Experiments
#
# The previous chapters derived four sequence layers — S4 {cite}`gu2022s4`, S4D
# {cite}`gu2022s4d`, DSS {cite}`gupta2022dss` and the selective S6 of Mamba {cite}`gu2023mamba`
# — and checked that each computes what its equations say. This chapter asks what they can
# *learn*. We train the same small models on four tasks chosen to separate them:
#
# | task | what it needs | metric |
# |---|---|---|
# | selective copying | to *choose* which inputs to remember | token accuracy |
# | induction heads | to recall the token that followed a trigger, at any distance | accuracy at 1×, 2×, 4×, 8× the training length |
# | MNIST-1D {cite}`greydanus2020mnist1d` | to classify a short noisy signal | test accuracy |
# | monthly CO2 at Mauna Loa | to forecast a real, seasonal, trending series | test MAE (ppm) |
#
# and compare them with three baselines of about the same size: a causal convolutional
# network (`conv`), a GRU {cite}`cho2014gru` and a small causal transformer
# {cite}`vaswani2017attention`.
#
# Everything runs from one command line,
#
# ```bash
# python -m ssm.train TASK MODEL [--preset quick|full] [--seed S] [--out DIR] [--resume]
# ```
#
# whose last line of output is a JSON summary. The `quick` presets train in this page, live;
# the `full` presets take longer, so their results are read from `book/results/*.json`, each
# printed with the command that made it. The wall times in the tables are seconds on a
# 2-core CPU that other jobs were sharing while the runs were made: they give the order of
# magnitude, not a benchmark.

# %%
%matplotlib inline
import json
import re
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import ssm
from ssm import data, models, train

ssm.seed_everything(0)
ssm.set_plot_style()
torch.set_num_threads(1)  # these models are small: one thread is the fastest on a CPU
RESULTS = {p.stem: json.loads(p.read_text()) for p in sorted(Path("results").glob("*.json"))}
WORK = Path(tempfile.mkdtemp())
print(f"{len(RESULTS)} committed full-preset results")

# %% [markdown]
# ## The tasks
#
# ### Selective copying
#
# A sequence of $M$ *memory* positions holds $n$ data tokens at random positions; every other
# memory position holds the noise token $0$. Then come $n$ marker tokens $1$. At the marker
# positions the model must output the data tokens in the order they appeared:
#
# $$
# x = (\underbrace{x_1, \dots, x_M}_{\text{data among noise}}, \underbrace{1, \dots, 1}_{n}),
# \qquad y_{M+j} = \text{the } j\text{-th nonzero token of } x_{1:M}, \quad j = 1, \dots, n.
# $$ (exp-selcopy)
#
# Chapter 5 showed why a time-invariant (LTI) layer struggles here: its output is a fixed
# convolution of the input, so it cannot skip a *variable* number of noise tokens between
# two data tokens. S6 can: its step size $\Delta_t$ depends on the input, and a tiny
# $\Delta_t$ leaves the state unchanged, so the model can ignore the noise.
#
# ```{literalinclude} ../ssm/data.py
# :pyobject: selective_copying
# ```

# %%
x, y = data.selective_copying(2, n_tokens=4, n_memory=12, vocab=4, seed=0)
print("x =", x.tolist())
print("y =", y.tolist())
for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
    assert row_y[12:] == [t for t in row_x[:12] if t != 0]

# %% [markdown]
# The rows above read left to right: the targets ($-100$ marks a position that is not scored,
# `data.IGNORE`) are exactly the nonzero memory tokens in order, as {eq}`exp-selcopy` says.
#
# ### Induction heads
#
# Tokens $1, \dots, V$ are drawn at random; a trigger token $0$ appears once, at a position $p$
# in the first half, and again at the last position $L$. The answer is the token that followed
# the first trigger {cite}`olsson2022induction`:
#
# $$
# x_p = x_L = 0, \qquad y_L = x_{p+1}.
# $$ (exp-induction)
#
# A model that has learned the *rule* — "find the trigger, copy what followed it" — works at
# any length; a model that has learned positions does not. So we also test at 2×, 4× and 8×
# the training length.
#
# ```{literalinclude} ../ssm/data.py
# :pyobject: induction_heads
# ```

# %%
x, y = data.induction_heads(1, length=16, vocab=5, seed=1)
p = int((x[0] == 0).nonzero()[0])
print("x =", x[0].tolist(), f"  trigger at p = {p}, answer y_L = {int(y[0, -1])}")
assert int(y[0, -1]) == int(x[0, p + 1]) and int(x[0, -1]) == 0

# %% [markdown]
# ### MNIST-1D and a real series
#
# MNIST-1D {cite}`greydanus2020mnist1d` turns ten digit templates into 40-step signals by
# padding, shifting, shearing, scaling and adding correlated noise; the package generates its
# 4000 training and 1000 test sequences locally (`ssm.data.mnist1d`). Its README reports
# logistic regression at 32 %, an MLP at 68 %, a CNN at 94 %, a GRU at 91 % and humans at 96 %.
#
# For forecasting we use the monthly mean CO2 concentration at Mauna Loa, 1958–2001, which
# ships with `statsmodels` (`ssm.data.co2_monthly`). The last 20 % of the months are the test
# period. From a context of $c = 48$ months the model predicts the next $T = 12$. The
# baseline to beat is the *seasonal naive* forecast {cite}`box2015time`, which repeats the
# value one season ($s = 12$ months) earlier:
#
# $$
# \hat y_{c + h} = y_{c - s + (h \bmod s)}, \qquad h = 0, \dots, T - 1.
# $$ (exp-snaive)
#
# ```{literalinclude} ../ssm/data.py
# :pyobject: seasonal_naive
# ```

# %%
series = data.co2_monthly()
n_train = int(len(series) * 0.8)
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(range(n_train), series[:n_train].numpy(), label="train")
ax.plot(range(n_train, len(series)), series[n_train:].numpy(), label="test")
ax.set(xlabel="month since 1958-03", ylabel="CO2 (ppm)", title="Mauna Loa CO2, monthly mean")
ax.legend()
plt.show()
co2_task, co2_cfg = train.make_task("co2", "quick")
naive_mae = co2_task.reference["seasonal_naive_mae"]
print(f"{len(series)} months; seasonal naive test MAE = {naive_mae:.4f} ppm")
assert 1.0 < naive_mae < 2.5

# %% [markdown]
# The series rises by about 1.5 ppm a year, so the seasonal naive forecast is wrong by
# about one year's growth: its test MAE is between 1 and 2.5 ppm. A model that learns the
# trend as well as the season should beat it.
#
# ## The models
#
# Every model is the same sandwich: an encoder (a token embedding, or a linear map of the
# input features), a stack of residual blocks of one *backbone*, a final norm and a linear
# decoder. The task decides only what is read out: every position (selective copying), the
# last one (induction heads, forecasting) or the mean over time (MNIST-1D).
#
# ```{literalinclude} ../ssm/models.py
# :pyobject: make_block
# ```
#
# The S4, S4D and DSS blocks are chapter 3 and 4's `SequenceBlock`; the S6 block is chapter 5's
# residual Mamba block. To compare backbones *at equal size*, each preset fixes a parameter
# budget, and the width $d$ of every model is the one whose parameter count is the closest:
#
# ```{literalinclude} ../ssm/models.py
# :pyobject: width_for_budget
# ```

# %%
sc_task, sc_cfg = train.make_task("selective_copying", "full")
print(f"budget {sc_cfg['params']} parameters, {sc_cfg['n_layers']} layers, N = {sc_cfg['d_state']}")
for name in train.available_models():
    m = train.make_model(name, sc_task, sc_cfg)
    n = models.count_parameters(m)
    print(f"{name:12s} d = {m.d_model:3d}   parameters = {n:6d}")
    assert abs(n - sc_cfg["params"]) < 0.1 * sc_cfg["params"]

# %% [markdown]
# Every model lands within 10 % of the budget.
#
# ## The training loop
#
# The loop is plain PyTorch: AdamW {cite}`loshchilov2019adamw`, gradient clipping, and a
# learning rate that rises linearly over the first 5 % of the $K$ steps and then follows a
# cosine {cite}`loshchilov2017sgdr`,
#
# $$
# \eta_k = \eta \cdot \tfrac12 \left(1 + \cos\left(\pi \tfrac{k - k_w}{K - k_w}\right)\right),
# \quad k \ge k_w.
# $$ (exp-cosine)
#
# ```{literalinclude} ../ssm/train.py
# :pyobject: cosine_with_warmup
# ```
#
# As in S4, the SSM parameters — the step size $\Delta$, the state matrix $A$ and the input
# matrix $B$, which each layer marks with `_ssm_param = True` — get their own learning rate
# and no weight decay, because they set the layer's time scales and decay would drag them
# towards zero:
#
# ```{literalinclude} ../ssm/train.py
# :pyobject: param_groups
# ```
#
# The S4, S4D and DSS parameters train at $10^{-3}$, the rest at the preset's rate:
# $3 \cdot 10^{-3}$, or $6 \cdot 10^{-3}$ on the two token tasks, where S6 learned faster with
# it. S6 keeps Mamba's recipe: its $\Delta$, $A$ and selection projections train at the main
# rate, without weight decay on $A$, $D$ and the $\Delta$ bias. Every training batch is a function of
# `(seed, step)` only, and a checkpoint holds the model, the optimiser, the schedule and
# PyTorch's random state, so `--resume` continues a run bit for bit (the tests check it).
#
# ## Selective copying: LTI against S6
#
# First the quick preset, live: S4D and S6 at the same size.

# %%
# NBVAL_IGNORE_OUTPUT
quick = {}
for name in ("s4d", "s6"):
    task, cfg, model = train.build("selective_copying", name, "quick", seed=0)
    start = time.perf_counter()
    history = train.train(model, task, cfg, WORK / name, progress=False)
    quick[name] = {"model": model, "acc": train.evaluate(model, task)["test_acc"]}
    print(f"{name}: {models.count_parameters(model)} parameters, "
          f"{time.perf_counter() - start:.1f} s, loss {history[0]['loss']:.4f} -> "
          f"{history[-1]['loss']:.4f}, test accuracy {quick[name]['acc']:.4f}")

# %%
acc = {name: q["acc"] for name, q in quick.items()}
assert acc["s6"] > 0.8 and acc["s6"] > acc["s4d"] + 0.15, acc

# %% [markdown]
# Even the quick run ($M = 16$ memory positions, $n = 4$ tokens, vocabulary 4, 500 steps)
# separates them: S6 is above 80 % token accuracy and more than 15 points ahead of S4D. The full
# preset (longer sequences: $M = 48$, $n = 8$, vocabulary 8, 3000 steps, 30 000 parameters)
# gives:

# %%
ORDER = ("s4", "s4d", "dss", "s6", "conv", "gru", "transformer")


def full_results(task):
    """The committed full-preset results of a task, in the book's model order."""
    found = {r["model"]: r for r in RESULTS.values() if r["task"] == task}
    return [found[m] for m in ORDER if m in found]


def show_table(task, metrics):
    """Print model, parameters, CPU wall time and the given test metrics, then the commands."""
    rows = full_results(task)
    print(f"{'model':12s} {'params':>7s} {'time (s)':>9s}" + "".join(f"{m:>12s}" for m in metrics))
    for r in rows:
        values = "".join(f"{r['test'][m]:12.4f}" for m in metrics)
        print(f"{r['model']:12s} {r['params']:7d} {r['wall_time_s']:9.1f}" + values)
    print("\nmade by (each run also wrote to its own --out folder):")
    for r in rows:
        print("  " + re.sub(r" --out \S+", "", r["command"]))
    return {r["model"]: r for r in rows}


def plot_curves(task, ax, title):
    """Training loss against step for every committed full run of a task."""
    for r in full_results(task):
        steps = [h["step"] for h in r["history"]]
        ax.plot(steps, [h["loss"] for h in r["history"]], label=r["model"])
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    ax.legend()


sc = show_table("selective_copying", ["test_acc"])
best_lti = max((m for m in ("s4", "s4d", "dss") if m in sc), key=lambda m: sc[m]["test"]["test_acc"])
assert sc["s6"]["test"]["test_acc"] >= 0.97
assert sc[best_lti]["test"]["test_acc"] < sc["s6"]["test"]["test_acc"] - 0.10
assert min(sc["gru"]["test"]["test_acc"], sc["transformer"]["test"]["test_acc"]) > 0.99
assert sc["conv"]["test"]["test_acc"] < 0.35
conv_model = train.make_model("conv", sc_task, sc_cfg)
assert len(conv_model.blocks) == 2 and conv_model.blocks[0].conv.kernel_size == (9,)

# %% [markdown]
# S6 copies more than 97 % of the tokens correctly. The best of the three LTI models, with the
# same parameter budget, the same data and the same number of steps, stays more than 10 points
# below it. The loss curves below tell the same story: at the end of training, S6's loss (the
# mean of the last ten logged values) is less than a third of the best LTI model's.
#
# The baselines sort the same way. The GRU, whose gates depend on the input, and the
# transformer, whose attention weights depend on the input, solve the task too — at this
# small scale even slightly better than S6 (above 99 %). The causal CNN, a fixed convolution
# like the LTI layers but with a short window (a stack of two kernels of width 9 sees 17
# steps), is far below all of them, under 35 %. What separates the models is whether
# they can make their mixing depend on the input.

# %%
def final_loss(r):
    """Mean of the last ten logged training losses of a run."""
    return sum(h["loss"] for h in r["history"][-10:]) / 10


fig, (ax0, ax) = plt.subplots(1, 2, figsize=(11, 3.4))
kind = {"s4": "C0", "s4d": "C0", "dss": "C0", "s6": "C3", "conv": "0.6", "gru": "0.6",
        "transformer": "0.6"}
ax0.bar(list(sc), [r["test"]["test_acc"] for r in sc.values()], color=[kind[m] for m in sc])
ax0.axhline(1 / sc_cfg["vocab"], color="0.3", ls=":", label="chance")
ax0.set(ylabel="test token accuracy", ylim=(0, 1.02),
        title="blue: LTI, red: S6, grey: baselines (equal size)")
ax0.legend(loc="upper left")
plot_curves("selective_copying", ax, "training loss")
plt.tight_layout()
plt.show()
print(f"final loss: s6 {final_loss(sc['s6']):.4f}, {best_lti} {final_loss(sc[best_lti]):.4f}")
assert final_loss(sc["s6"]) < final_loss(sc[best_lti]) / 3

# %% [markdown]
# ### What S6 learned: $\Delta_t$ over an input
#
# Chapter 5's intuition for why S6 can do this is its input-dependent step size: a large
# $\Delta_t$ writes the current input into the state, $\Delta_t \approx 0$ leaves the state
# as it was. Does the trained model use $\Delta$ that way? Below, the quick S6 model from above
# reads test sequences, and we look at the step sizes
# $\Delta_t = \operatorname{softplus}(W_\Delta u_t + b_\Delta)$ of its first layer
# (`Mamba.delta`, applied to the SSM input $u$ from `Mamba.ssm_inputs`): for one sequence, per
# channel and averaged over the $D$ channels with the data tokens marked, and, over 256
# sequences, the mean $\Delta$ on data tokens against the mean on noise tokens.

# %%
q_cfg = train.PRESETS["selective_copying"]["quick"]
kw = {k: q_cfg[k] for k in ("n_tokens", "n_memory", "vocab")}
x, y = data.selective_copying(256, **kw, seed=12345)
s6_model = quick["s6"]["model"].eval()
block = s6_model.blocks[0]
with torch.no_grad():
    _, u, _ = block.mixer.ssm_inputs(block.norm(s6_model.encoder(x)))
    delta = block.mixer.delta(u)  # (256, D, L)
memory = slice(0, kw["n_memory"])
is_data = x[:, memory] > 1  # (256, M)
delta_memory = delta[:, :, memory].mean(1)  # mean over channels, (256, M)
on_data, on_noise = delta_memory[is_data].mean(), delta_memory[~is_data].mean()

fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(8, 4.4), sharex=True)
ax0.imshow(delta[0].log10().numpy(), aspect="auto", cmap="magma")
ax0.set(ylabel="channel", title=r"$\log_{10} \Delta_t$ of S6's first layer, one test sequence")
ax1.plot(delta[0].mean(0).numpy(), color="C0", label=r"mean over channels of $\Delta_t$")
for t in is_data[0].nonzero().flatten().tolist():
    ax1.axvline(t, color="C3", alpha=0.4)
ax1.axvspan(kw["n_memory"] - 0.5, x.shape[1] - 0.5, color="0.9", label="markers (output)")
ax1.set(xlabel="position $t$ (red: data tokens)", ylabel=r"$\Delta_t$")
ax1.legend(loc="upper left")
plt.tight_layout()
plt.show()
print(f"mean Delta over 256 sequences: on data tokens {on_data:.4f}, on noise tokens {on_noise:.4f}")
assert float(delta.mean()) < 0.1 and 0.7 < float(on_data / on_noise) < 1.4

# %% [markdown]
# The answer is more interesting than the intuition. The step sizes are small everywhere
# (their mean is below 0.1, so $\bar A_t = e^{\Delta_t A} \approx I$ and the state keeps what it
# holds for many steps) and they vary by channel and position, but, averaged over the channels,
# data tokens do not stand out: the two means above differ by less than a factor 1.4. This
# small model does not solve the task with one "write now" switch in the $\Delta$ of its first
# layer. Its $B_t$ and $C_t$ depend on the input too, as do the convolution before the scan and
# the gate after it, and which of them carries the selection is learned, not designed.

# %% [markdown]
# ## Induction heads and length extrapolation
#
# The quick preset (length 32, vocabulary 8, 400 steps), live, for S6:

# %%
# NBVAL_IGNORE_OUTPUT
ih_quick = train.run("induction_heads", "s6", "quick", out=WORK / "ih_s6", progress=False)
print({k: round(v, 4) for k, v in ih_quick["test"].items()}, f"{ih_quick['wall_time_s']:.1f} s")

# %%
assert ih_quick["test"]["test_x1_acc"] > 0.5, ih_quick["test"]

# %% [markdown]
# Chance is $1/8$; after 400 steps the quick model is above 50 % at its training length. The full
# preset trains at length 64 with a vocabulary of 16 for 2000 steps and tests at 64, 128, 256
# and 512:

# %%
ih = show_table("induction_heads", [f"test_x{m}_acc" for m in (1, 2, 4, 8)])
fig, (ax0, ax) = plt.subplots(1, 2, figsize=(10, 3.2))
plot_curves("induction_heads", ax0, "induction heads, full preset")
for name, r in ih.items():
    L = r["config"]["length"]
    ax.plot([m * L for m in (1, 2, 4, 8)], [r["test"][f"test_x{m}_acc"] for m in (1, 2, 4, 8)],
            "o-", label=name)
ax.axhline(1 / 16, color="0.5", ls=":", label="chance")
ax.set(xscale="log", xlabel="test length", ylabel="accuracy", title="induction heads",
       ylim=(0, 1.02))
ax.legend()
plt.tight_layout()
plt.show()
assert all(ih["s6"]["test"][f"test_x{m}_acc"] == 1.0 for m in (1, 2, 4, 8))
assert all(ih["gru"]["test"][f"test_x{m}_acc"] == 1.0 for m in (1, 2, 4, 8))
for m in ("s4", "s4d"):
    assert ih[m]["test"]["test_x1_acc"] == 1.0 and ih[m]["test"]["test_x2_acc"] < 0.25
assert 0.4 < ih["dss"]["test"]["test_x1_acc"] < 0.6 and ih["conv"]["test"]["test_x1_acc"] < 1 / 16
tr = ih["transformer"]["test"]
assert tr["test_x1_acc"] == 1.0 and 0.4 < tr["test_x2_acc"] < 0.6 and tr["test_x4_acc"] < 1 / 3

# %% [markdown]
# S6 answers every one of the 512 test sequences correctly, at the training length and at 2×,
# 4× and 8× it (512 tokens): it has learned the rule, not the positions. Its state has a fixed
# size, so a longer sequence costs it nothing but time. The GRU, the other model whose
# recurrence depends on the input, does the same. S4 and S4D are the instructive contrast:
# they are perfect at the training length too, but at twice the length they fall below 25 %,
# towards chance ($1/16$). A time-invariant layer can fit this task with a kernel tuned to the
# training length; that kernel says nothing about longer sequences. (DSS reaches only about
# half at the training length, and the causal CNN, which sees 17 steps, cannot reach the
# trigger at all.) The causal transformer, with fixed sinusoidal positions, is also perfect at
# the training length and degrades more gently: about half right at 2×, below a third at 4×.
# Attention can reach the trigger at any distance; what is new at longer lengths is the
# positions, which it never saw in training. That is the likely cause, though we have not
# isolated it.

# %% [markdown]
# ## MNIST-1D
#
# The quick preset, live, for S4D:

# %%
# NBVAL_IGNORE_OUTPUT
mn_quick = train.run("mnist1d", "s4d", "quick", out=WORK / "mn_s4d", progress=False)
print(f"s4d quick: test accuracy {mn_quick['test']['test_acc']:.4f}, "
      f"{mn_quick['wall_time_s']:.1f} s")

# %%
assert 0.45 < mn_quick["test"]["test_acc"] < 0.94

# %% [markdown]
# 400 steps put it above 45 %, far above logistic regression (32 %) and short of the CNN (94 %).
# The full preset (40 000 parameters, 2000 steps of 64 sequences, dropout 0.1):

# %%
mn = show_table("mnist1d", ["test_acc"])
refs = train.make_task("mnist1d", "quick")[0].reference
fig, (ax0, ax) = plt.subplots(1, 2, figsize=(11, 3.4))
plot_curves("mnist1d", ax0, "MNIST-1D, full preset")
ax.bar(list(mn), [r["test"]["test_acc"] for r in mn.values()], color="C0")
for i, (name, value) in enumerate(sorted(refs.items(), key=lambda kv: kv[1])):
    ax.axhline(value, color=f"C{i + 1}", ls="--", lw=1, label=f"{name.replace('_', ' ')} {value:.0%}")
ax.set(ylabel="test accuracy", title="test accuracy against the published references",
       ylim=(0, 1))
ax.legend(loc="lower right", ncol=2)
plt.tight_layout()
plt.show()
mn_lti = [mn[m]["test"]["test_acc"] for m in ("s4", "s4d", "dss") if m in mn]
assert mn["s6"]["test"]["test_acc"] >= 0.96 and len(mn_lti) == 3
assert all(0.79 <= a < 0.91 for a in mn_lti)
assert mn["gru"]["test"]["test_acc"] > 0.96 and 0.94 < mn["conv"]["test"]["test_acc"] < 0.96
assert mn["transformer"]["test"]["test_acc"] < 0.8 and max(mn_lti) < mn["conv"]["test"]["test_acc"]
assert sorted(mn, key=lambda m: -mn[m]["test"]["test_acc"])[:2] == ["s6", "gru"]

# %% [markdown]
# S6 passes the CNN reference (94 %) and even the human one (96 %). Our baselines are stronger
# than the published ones: the GRU reaches 97 %, far above the README's 91 %, and the causal
# CNN 95 %. At this scale the training recipe (AdamW, a cosine schedule, residual blocks with
# normalisation) matters as much as the architecture, so compare within our table rather than
# with the published numbers. Within it, the three LTI models, with the same budget and
# training, land between 79 % and 91 %, below the CNN; the transformer is lowest, under 80 %.
# We have not isolated why the LTI layers fall behind on a task that needs no long memory (the
# sequences have 40 steps). The two best models, S6 and the GRU, are the two whose recurrence
# depends on the input; MNIST-1D's digits sit at random offsets among padding, and a layer that
# can choose what to write into its state does not have to learn every offset separately — a
# hypothesis these runs are consistent with, not a proof.

# %% [markdown]
# ## Forecasting CO2
#
# The quick preset, live, for S4D, then its forecasts over the test period: one 12-month
# forecast per year, each from the 48 months before it.

# %%
# NBVAL_IGNORE_OUTPUT
task, cfg, co2_model = train.build("co2", "s4d", "quick", seed=0)
train.train(co2_model, task, cfg, WORK / "co2_s4d", progress=False)
co2_metrics = train.evaluate(co2_model, task)
print(f"s4d quick: test MAE {co2_metrics['test_mae']:.4f} ppm, seasonal naive {naive_mae:.4f} ppm")

# %%
assert co2_metrics["test_mae"] < naive_mae

# %%
context, horizon = cfg["context"], cfg["horizon"]
x_raw, y_raw = data.forecast_windows(series[n_train - context :], context, horizon)
x_std, _ = task.tests["test"]
with torch.no_grad():
    y_model = co2_model.eval()(x_std) * task.scale + x_raw.mean(dim=1)
y_naive = data.seasonal_naive(x_raw, horizon, 12)[..., 0]
fig, ax = plt.subplots(figsize=(8, 3.2))
months = torch.arange(n_train, len(series))
ax.plot(months.numpy(), series[n_train:].numpy(), color="0.3", label="truth")
for i, w in enumerate(range(0, x_raw.shape[0], 12)):
    t = torch.arange(n_train + w, n_train + w + horizon).numpy()
    ax.plot(t, y_model[w].numpy(), color="C0", label="S4D (quick)" if i == 0 else None)
    ax.plot(t, y_naive[w].numpy(), color="C3", ls="--", label="seasonal naive" if i == 0 else None)
ax.set(xlabel="month since 1958-03", ylabel="CO2 (ppm)", title="12-month forecasts, test period")
ax.legend()
plt.show()

# %% [markdown]
# The full preset (20 000 parameters, 1000 steps), with the seasonal naive forecast as the bar
# to clear:

# %%
co2 = show_table("co2", ["test_mae", "test_mse"])
print(f"\nseasonal naive: test MAE {naive_mae:.4f} ppm")
fig, ax = plt.subplots(figsize=(7, 3.2))
plot_curves("co2", ax, "CO2 forecasting, full preset (standardised MSE)")
plt.show()
co2_ssms = [m for m in ("s4", "s4d", "dss", "s6") if m in co2]
assert len(co2_ssms) == 4
assert all(co2[m]["test"]["test_mae"] < naive_mae / 3 for m in co2_ssms)
co2_maes = [co2[m]["test"]["test_mae"] for m in co2_ssms]
assert max(co2_maes) - min(co2_maes) < 0.1
assert all(0.4 < co2[m]["test"]["test_mae"] < 0.55 for m in ("conv", "gru", "transformer"))
assert data.forecast_windows(series[:n_train], 48, 12)[0].shape[0] == 361

# %% [markdown]
# Every SSM beats the seasonal naive forecast by more than a factor of three in test MAE: the
# models have learned the trend that the naive forecast misses. The series is short (361
# training windows), so this says more about the inductive bias of a small sequence model than
# about which layer is best: the four SSMs are within a tenth of a ppm of each other, and the
# three baselines land in the same range, between 0.4 and 0.55 ppm.

# %% [markdown]
# ## The targets
#
# The project set itself four targets for the full presets. The table is computed from the
# committed results above; "missed by" is the distance to the bound.

# %%
ssms = [m for m in ("s4", "s4d", "dss", "s6") if m in mn]
best_ssm = max(ssms, key=lambda m: mn[m]["test"]["test_acc"])
checks = [
    ("selective copying: S6 token accuracy >= 0.97", sc["s6"]["test"]["test_acc"], 0.97),
    ("induction heads: S6 at training length >= 0.95", ih["s6"]["test"]["test_x1_acc"], 0.95),
    ("induction heads: S6 at 4x the length >= 0.90", ih["s6"]["test"]["test_x4_acc"], 0.90),
    (f"MNIST-1D: best SSM ({best_ssm}) >= 0.94 (CNN)", mn[best_ssm]["test"]["test_acc"], 0.94),
    (f"MNIST-1D: best SSM ({best_ssm}) >= 0.96 (human)", mn[best_ssm]["test"]["test_acc"], 0.96),
]
for m in ("s4", "s4d", "dss", "s6"):
    if m in co2:  # lower is better: compare -MAE with -baseline
        checks.append((f"CO2: {m} test MAE below seasonal naive {naive_mae:.4f}",
                       -co2[m]["test"]["test_mae"], -naive_mae))
met = {}
for claim, value, bound in checks:
    met[claim] = value >= bound
    verdict = "met" if met[claim] else f"missed by {bound - value:.4f}"
    print(f"{claim:55s} {abs(value):.4f}  {verdict}")
print(f"\nbest LTI model on selective copying: {best_lti} at {sc[best_lti]['test']['test_acc']:.4f}")
assert all(met.values())

# %% [markdown]
# All the targets are met by the committed runs; the human reference on MNIST-1D is passed too.
#
# ## What the experiments say
#
# - **Selection is what separates the models.** On selective copying, the task that needs the
#   model to decide *what* to keep, S6 is far ahead of S4, S4D and DSS at the same size: this
#   is the failure of time-invariant layers that chapter 5 derived, now measured. The GRU and
#   the transformer, whose mixing also depends on the input, succeed as well; the fixed
#   convolution does not.
# - **The rule, not the positions.** S6's induction heads work unchanged at 8× the training
#   length, and so do the GRU's; S4, S4D and the transformer, perfect at the training length,
#   do not carry over.
# - **On the real series the models are close.** Every SSM beats the seasonal naive baseline
#   by a wide margin, and the choice of layer, SSM or baseline, matters little there.
# - **On MNIST-1D the input-dependent recurrences win.** S6 and the GRU are above 96 %; the
#   LTI layers stay below a causal CNN.
#
# Keep the scale in mind: these are models of 10 000–40 000 parameters trained for minutes
# on a CPU, one seed each. The quick presets above and the tests of `ssm.train` let you check
# any of it on your own machine, and `python -m ssm.train TASK MODEL --preset full` repeats
# any row of the tables.

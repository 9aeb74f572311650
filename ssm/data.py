"""Data for chapter 8: procedural tasks, MNIST-1D, a real series, and loaders for local files.

Shape glossary: ``b`` batch, ``L`` sequence length, ``F`` features, ``T`` forecast horizon.

Token tasks return ``(x, y)`` with ``x`` of shape ``(b, L)`` (``int64`` tokens) and ``y`` of
shape ``(b, L)`` holding the target token where the model is scored and ``IGNORE`` elsewhere.
Everything here is generated from a seed or read from a local file; nothing is downloaded.
"""

from __future__ import annotations

import gzip
import wave
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IGNORE",
    "selective_copying",
    "induction_heads",
    "mnist1d",
    "co2_monthly",
    "forecast_windows",
    "seasonal_naive",
    "load_sequential_mnist",
    "load_forecast_csv",
    "load_audio_mnist",
]

IGNORE = -100
"""Target value of positions that are not scored (``torch.nn.functional.cross_entropy``'s
``ignore_index``)."""


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return value


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(_check_int("seed", seed, 0))


def selective_copying(
    batch: int, n_tokens: int = 16, n_memory: int = 64, vocab: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective copying task of :cite:p:`gu2023mamba` (:eq:`exp-selcopy`).

    ``n_tokens`` data tokens, drawn from ``{2, ..., vocab + 1}``, sit at random positions
    among ``n_memory`` positions otherwise filled with the noise token ``0``. Then come
    ``n_tokens`` marker tokens ``1``; at those positions the model must output the data
    tokens in their order of appearance.

    Returns:
        ``x`` ``(batch, n_memory + n_tokens)`` int64 and ``y`` of the same shape, equal to
        ``IGNORE`` except on the last ``n_tokens`` positions.
    """
    _check_int("batch", batch, 1)
    _check_int("n_tokens", n_tokens, 1)
    _check_int("vocab", vocab, 1)
    if _check_int("n_memory", n_memory, 1) < n_tokens:
        raise ValueError(f"n_memory: expected >= n_tokens = {n_tokens}, got {n_memory}")
    g = _generator(seed)
    data = torch.randint(2, vocab + 2, (batch, n_tokens), generator=g)
    keys = torch.rand(batch, n_memory, generator=g)
    positions = keys.topk(n_tokens, dim=1).indices.sort(dim=1).values
    memory = torch.zeros(batch, n_memory, dtype=torch.long).scatter(1, positions, data)
    x = torch.cat([memory, torch.ones(batch, n_tokens, dtype=torch.long)], dim=1)
    y = torch.full_like(x, IGNORE)
    y[:, n_memory:] = data
    return x, y


def induction_heads(
    batch: int, length: int = 64, vocab: int = 16, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Associative recall with a single key, the induction-heads task :cite:p:`olsson2022induction`.

    Tokens ``1..vocab`` are drawn uniformly; the trigger token ``0`` appears once at a random
    position ``p`` in the first half of the sequence, followed by the answer token. The last
    position holds the trigger again, and the target there is the token that followed it.

    Returns:
        ``x`` ``(batch, length)`` int64 and ``y`` of the same shape, ``IGNORE`` except the last
        position.
    """
    _check_int("batch", batch, 1)
    _check_int("vocab", vocab, 1)
    _check_int("length", length, 4)
    g = _generator(seed)
    x = torch.randint(1, vocab + 1, (batch, length), generator=g)
    p = torch.randint(0, length // 2, (batch,), generator=g)
    rows = torch.arange(batch)
    x[rows, p] = 0
    x[:, -1] = 0
    y = torch.full_like(x, IGNORE)
    y[:, -1] = x[rows, p + 1]
    return x, y


def mnist1d(seed: int = 42) -> dict[str, torch.Tensor]:
    """MNIST-1D :cite:p:`greydanus2020mnist1d`, generated locally with its default arguments.

    Returns:
        A dict with ``x`` ``(4000, 40, 1)`` float32, ``y`` ``(4000,)`` int64, ``x_test``
        ``(1000, 40, 1)`` and ``y_test`` ``(1000,)``. The NumPy global random state is left
        unchanged.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = _check_int("seed", seed, 0)
    state = np.random.get_state()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {
        "x": torch.tensor(d["x"], dtype=torch.float32).unsqueeze(-1),
        "y": torch.tensor(d["y"], dtype=torch.long),
        "x_test": torch.tensor(d["x_test"], dtype=torch.float32).unsqueeze(-1),
        "y_test": torch.tensor(d["y_test"], dtype=torch.long),
    }


def co2_monthly() -> torch.Tensor:
    """Monthly mean atmospheric CO2 at Mauna Loa, 1958-03 to 2001-12 (ppm), float64 ``(526,)``.

    Weekly values from ``statsmodels.datasets.co2`` averaged per month; the few weeks missing in
    the record are filled by linear interpolation first.
    """
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"].interpolate()
    monthly = weekly.resample("MS").mean()
    return torch.tensor(monthly.to_numpy(), dtype=torch.float64)


def forecast_windows(
    series: torch.Tensor, context: int, horizon: int, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a series into (context, future) windows.

    Args:
        series: ``(n,)`` or ``(n, F)``.
        context, horizon: window lengths; ``stride`` the step between window starts.

    Returns:
        ``x`` ``(w, context, F)`` and ``y`` ``(w, horizon, F)`` with
        ``w = (n - context - horizon) // stride + 1``.
    """
    if not isinstance(series, torch.Tensor):
        raise TypeError(f"series: expected a torch.Tensor, got {type(series).__name__}")
    if series.dim() == 1:
        series = series.unsqueeze(-1)
    if series.dim() != 2:
        raise ValueError(f"series: expected shape (n,) or (n, F), got {tuple(series.shape)}")
    _check_int("context", context, 1)
    _check_int("horizon", horizon, 1)
    _check_int("stride", stride, 1)
    n = series.shape[0]
    if n < context + horizon:
        raise ValueError(
            f"series: expected at least context + horizon = {context + horizon} steps, got {n}"
        )
    starts = torch.arange(0, n - context - horizon + 1, stride)
    x = torch.stack([series[s : s + context] for s in starts.tolist()])
    y = torch.stack([series[s + context : s + context + horizon] for s in starts.tolist()])
    return x, y


def seasonal_naive(x: torch.Tensor, horizon: int, period: int) -> torch.Tensor:
    """The seasonal naive forecast: each future step repeats the value one period earlier.

    ``y_hat[t] = x[context - period + (t mod period)]`` (:eq:`exp-snaive`), for ``x`` of shape
    ``(w, context, F)`` with ``context >= period``. Returns ``(w, horizon, F)``.
    """
    if x.dim() != 3:
        raise ValueError(f"x: expected shape (w, context, F), got {tuple(x.shape)}")
    _check_int("horizon", horizon, 1)
    if _check_int("period", period, 1) > x.shape[1]:
        raise ValueError(f"period: expected <= context = {x.shape[1]}, got {period}")
    idx = x.shape[1] - period + torch.arange(horizon) % period
    return x[:, idx]


def _missing(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: expected the file {path}")


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format: magic, dims as big-endian int32, uint8 data)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(
            f"{path}: expected an IDX file of uint8 (magic 0x0000080N), got header {raw[:4].hex()}"
        )
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(
            f"{path}: header announces shape {tuple(dims)} but holds {data.size} bytes"
        )
    return data.reshape(tuple(int(d) for d in dims))


def load_sequential_mnist(
    root: str | Path, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequential MNIST from the files torchvision downloads, read pixel by pixel.

    Expects ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``),
    the layout of ``torchvision.datasets.MNIST(root)``.

    Returns:
        ``x`` ``(n, 784, 1)`` float32 in ``[0, 1]`` (row-major pixel order) and ``y`` ``(n,)``.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind in ("images-idx3", "labels-idx1"):
        path = Path(root) / "MNIST" / "raw" / f"{prefix}-{kind}-ubyte"
        if not path.exists() and path.with_name(path.name + ".gz").exists():
            path = path.with_name(path.name + ".gz")
        if not path.exists():
            raise _missing(path, "sequential MNIST (torchvision IDX format)")
        arrays.append(_read_idx(path))
    images, labels = arrays
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"MNIST files: expected images (n, rows, cols) and labels (n,), got "
            f"{images.shape} and {labels.shape}"
        )
    x = torch.tensor(images.reshape(len(images), -1, 1), dtype=torch.float32) / 255.0
    return x, torch.tensor(labels, dtype=torch.long)


_FORECAST_SPLITS = {
    # name: (file name, rows used (None: all), train / val / test fractions)
    "etth1": ("ETTh1.csv", 14400, (0.6, 0.2, 0.2)),  # 12/4/4 months of hours (Informer)
    "etth2": ("ETTh2.csv", 14400, (0.6, 0.2, 0.2)),
    "weather": ("weather.csv", None, (0.7, 0.1, 0.2)),  # the Autoformer split
}


def load_forecast_csv(
    root: str | Path, name: str, context: int = 96, horizon: int = 96
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """ETTh1, ETTh2 or Weather forecasting windows from the CSV files of :cite:p:`zhou2021informer`.

    Expects ``root/ETTh1.csv``, ``root/ETTh2.csv`` or ``root/weather.csv``: a header row whose
    first column is ``date``, then one numeric column per variable. The chronological split is
    12/4/4 months for ETT (first 14 400 hourly rows) and 70/10/20 % for Weather; each split's
    windows start after the previous split ends minus ``context`` steps, and all variables are
    standardised with the training split's mean and standard deviation.

    Returns:
        ``{"train": (x, y), "val": (x, y), "test": (x, y)}`` with ``x`` ``(w, context, F)`` and
        ``y`` ``(w, horizon, F)``, float32.
    """
    if name not in _FORECAST_SPLITS:
        raise ValueError(f"name: expected one of {sorted(_FORECAST_SPLITS)}, got {name!r}")
    file, rows, fractions = _FORECAST_SPLITS[name]
    path = Path(root) / file
    if not path.exists():
        raise _missing(path, f"{name} (CSV with a 'date' column, then numeric columns)")
    with open(path) as f:
        header = f.readline().strip().split(",")
    if not header or header[0].strip('"') != "date":
        raise ValueError(f"{path}: expected a header starting with 'date', got {header[:3]}")
    values = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, len(header)), ndmin=2)
    data = torch.tensor(values[:rows] if rows else values, dtype=torch.float32)
    n = data.shape[0]
    n_train, n_val = int(n * fractions[0]), int(n * fractions[1])
    bounds = {
        "train": (0, n_train),
        "val": (n_train - context, n_train + n_val),
        "test": (n_train + n_val - context, n),
    }
    mean, std = data[:n_train].mean(0), data[:n_train].std(0).clamp_min(1e-8)
    data = (data - mean) / std
    return {k: forecast_windows(data[a:b], context, horizon) for k, (a, b) in bounds.items()}


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise ValueError(
                f"{path}: expected 16-bit mono PCM, got {8 * w.getsampwidth()}-bit "
                f"with {w.getnchannels()} channels"
            )
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return samples.astype(np.float32) / 32768.0, rate


def load_audio_mnist(
    root: str | Path, length: int = 8000, rate: int = 8000
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AudioMNIST spoken digits from its wav files.

    Expects ``root/NN/D_NN_I.wav`` (speaker ``NN``, digit ``D``, repetition ``I``): 16-bit mono
    PCM, as in the AudioMNIST repository's ``data`` folder. Each clip is resampled to ``rate``
    Hz by linear interpolation, then zero-padded or cut to ``length`` samples.

    Returns:
        ``x`` ``(n, length, 1)`` float32, ``y`` ``(n,)`` digits and ``speaker`` ``(n,)``, sorted
        by file name.
    """
    _check_int("length", length, 1)
    _check_int("rate", rate, 1)
    files = sorted(Path(root).glob("[0-9]*/[0-9]_*_*.wav"))
    if not files:
        raise _missing(Path(root) / "01" / "0_01_0.wav", "AudioMNIST (16-bit mono wav files)")
    xs, ys, speakers = [], [], []
    for path in files:
        samples, src_rate = _read_wav(path)
        n_out = max(1, round(len(samples) * rate / src_rate))
        t_out = np.arange(n_out) * (src_rate / rate)
        clip = np.interp(t_out, np.arange(len(samples)), samples).astype(np.float32)
        padded = np.zeros(length, dtype=np.float32)
        padded[: min(length, n_out)] = clip[:length]
        digit, speaker, _ = path.stem.split("_")
        xs.append(padded)
        ys.append(int(digit))
        speakers.append(int(speaker))
    return (torch.tensor(np.stack(xs)).unsqueeze(-1), torch.tensor(ys), torch.tensor(speakers))

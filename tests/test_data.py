"""Tests for ssm.data: generators checked by hand-built examples and brute force, loaders on
tiny files written here in the exact on-disk formats."""

from __future__ import annotations

import gzip
import struct
import wave

import numpy as np
import pytest
import torch

from ssm import data


def test_selective_copying_shapes_and_determinism():
    x, y = data.selective_copying(5, n_tokens=3, n_memory=10, vocab=4, seed=7)
    assert x.shape == y.shape == (5, 13) and x.dtype == torch.long
    x2, y2 = data.selective_copying(5, n_tokens=3, n_memory=10, vocab=4, seed=7)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = data.selective_copying(5, n_tokens=3, n_memory=10, vocab=4, seed=8)
    assert not torch.equal(x, x3)


def test_selective_copying_labels_are_the_data_tokens_in_order():
    x, y = data.selective_copying(64, n_tokens=4, n_memory=20, vocab=6, seed=0)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        memory, markers = row_x[:20], row_x[20:]
        assert markers == [1, 1, 1, 1]
        tokens = [t for t in memory if t != 0]  # read left to right, skipping noise
        assert len(tokens) == 4 and all(2 <= t <= 7 for t in tokens)
        assert row_y[20:] == tokens
        assert row_y[:20] == [data.IGNORE] * 20


def test_selective_copying_hand_example_when_memory_is_full():
    # n_memory == n_tokens: no noise, so the answer is the memory itself
    x, y = data.selective_copying(3, n_tokens=5, n_memory=5, vocab=3, seed=1)
    assert torch.equal(y[:, 5:], x[:, :5])


def test_induction_heads_labels():
    x, y = data.induction_heads(128, length=20, vocab=5, seed=3)
    assert x.shape == y.shape == (128, 20)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        triggers = [i for i, t in enumerate(row_x) if t == 0]
        assert len(triggers) == 2 and triggers[1] == 19 and triggers[0] < 10
        assert row_y[-1] == row_x[triggers[0] + 1]
        assert row_y[:-1] == [data.IGNORE] * 19
        assert all(1 <= t <= 5 for i, t in enumerate(row_x) if i not in triggers)
    assert torch.equal(x, data.induction_heads(128, length=20, vocab=5, seed=3)[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 0}, "batch: expected an int >= 1, got 0"),
        ({"batch": 2.0}, "batch: expected an int, got float"),
        ({"batch": 2, "n_tokens": 5, "n_memory": 4}, "n_memory: expected >= n_tokens = 5"),
        ({"batch": 2, "seed": -1}, "seed: expected an int >= 0"),
    ],
)
def test_selective_copying_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        data.selective_copying(**kwargs)


def test_induction_heads_bad_length():
    with pytest.raises(ValueError, match="length: expected an int >= 4, got 3"):
        data.induction_heads(2, length=3)


def test_mnist1d_matches_the_package_and_keeps_numpy_state():
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    d = data.mnist1d()
    assert np.random.rand() == expected_next
    assert d["x"].shape == (4000, 40, 1) and d["x_test"].shape == (1000, 40, 1)
    assert d["y"].shape == (4000,) and set(d["y"].tolist()) == set(range(10))
    from mnist1d.data import get_dataset_args, make_dataset

    ref = make_dataset(get_dataset_args())
    np.testing.assert_allclose(d["x"][:, :, 0].numpy(), ref["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(d["y_test"].numpy(), ref["y_test"])


def test_co2_monthly_is_complete_and_plausible():
    s = data.co2_monthly()
    assert s.shape == (526,) and not torch.isnan(s).any()
    # Mauna Loa: about 315 ppm in 1958, about 370 ppm in 2001
    assert 310 < float(s[:12].mean()) < 320 and 365 < float(s[-12:].mean()) < 375


def test_forecast_windows_against_loop():
    series = torch.arange(20.0).reshape(10, 2)
    x, y = data.forecast_windows(series, context=3, horizon=2, stride=2)
    starts = range(0, 10 - 5 + 1, 2)
    assert x.shape == (len(starts), 3, 2) and y.shape == (len(starts), 2, 2)
    for w, s in enumerate(starts):
        assert torch.equal(x[w], series[s : s + 3]) and torch.equal(y[w], series[s + 3 : s + 5])


def test_forecast_windows_errors():
    with pytest.raises(ValueError, match="expected at least context \\+ horizon = 5 steps, got 4"):
        data.forecast_windows(torch.zeros(4), 3, 2)
    with pytest.raises(TypeError, match="series: expected a torch.Tensor, got list"):
        data.forecast_windows([1.0, 2.0], 1, 1)


def test_seasonal_naive_hand_example():
    x = torch.tensor([0.0, 1, 2, 10, 11, 12]).reshape(1, 6, 1)
    # period 3: the future repeats the last three values
    assert seasonal_list(x, 5, 3) == [10, 11, 12, 10, 11]
    assert seasonal_list(x, 2, 1) == [12, 12]
    with pytest.raises(ValueError, match="period: expected <= context = 6, got 7"):
        data.seasonal_naive(x, 2, 7)


def seasonal_list(x, horizon, period):
    return data.seasonal_naive(x, horizon, period)[0, :, 0].tolist()


def write_idx(path, array, compress=False):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_load_sequential_mnist_tiny_files(tmp_path, compress):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.arange(3 * 4 * 4).reshape(3, 4, 4) * 5
    labels = np.array([7, 0, 3])
    suffix = ".gz" if compress else ""
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = data.load_sequential_mnist(tmp_path, split="test")
    assert x.shape == (3, 16, 1) and y.tolist() == [7, 0, 3]
    torch.testing.assert_close(x[1, :, 0], torch.tensor(images[1].ravel() / 255.0).float())


def test_load_sequential_mnist_errors(tmp_path):
    expected = str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte")
    with pytest.raises(FileNotFoundError, match=f"expected the file {expected}"):
        data.load_sequential_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte").write_bytes(b"PNG not idx")
    (raw / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(ValueError, match="expected an IDX file of uint8"):
        data.load_sequential_mnist(tmp_path)
    with pytest.raises(ValueError, match="split: expected 'train' or 'test', got 'val'"):
        data.load_sequential_mnist(tmp_path, split="val")


@pytest.mark.parametrize(("name", "file"), [("etth1", "ETTh1.csv"), ("weather", "weather.csv")])
def test_load_forecast_csv_tiny_file(tmp_path, name, file):
    n = 50
    values = np.stack([np.arange(n) * 1.0, np.arange(n) ** 2 / 10.0], axis=1)
    lines = ["date,HUFL,OT"] + [
        f"2016-07-01 {i:02d}:00:00,{a},{b}" for i, (a, b) in enumerate(values)
    ]
    (tmp_path / file).write_text("\n".join(lines) + "\n")
    splits = data.load_forecast_csv(tmp_path, name, context=4, horizon=2)
    frac = {"etth1": (0.6, 0.2), "weather": (0.7, 0.1)}[name]
    n_train, n_val = int(n * frac[0]), int(n * frac[1])
    mean, std = values[:n_train].mean(0), values[:n_train].std(0, ddof=1)
    z = (values - mean) / std
    x, y = splits["test"]
    # test windows start `context` steps before the test period and end with the file
    assert x.shape == (n - (n_train + n_val - 4) - 4 - 2 + 1, 4, 2)
    np.testing.assert_allclose(x[0].numpy(), z[n_train + n_val - 4 : n_train + n_val], rtol=1e-5)
    np.testing.assert_allclose(y[-1].numpy(), z[-2:], rtol=1e-5)
    assert splits["train"][0].shape[0] == n_train - 6 + 1


def test_load_forecast_csv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="ETTh2.csv"):
        data.load_forecast_csv(tmp_path, "etth2")
    with pytest.raises(ValueError, match="name: expected one of"):
        data.load_forecast_csv(tmp_path, "ettm1")
    (tmp_path / "ETTh1.csv").write_text("time,a\n1,2\n")
    with pytest.raises(ValueError, match="expected a header starting with 'date'"):
        data.load_forecast_csv(tmp_path, "etth1")


def write_wav(path, samples, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def test_load_audio_mnist_tiny_files(tmp_path):
    ramp = np.arange(0, 1600, 100)  # 16 samples at 16 Hz
    write_wav(tmp_path / "01" / "3_01_0.wav", ramp, rate=16)
    write_wav(tmp_path / "02" / "7_02_4.wav", -ramp[:6], rate=16)
    x, y, speaker = data.load_audio_mnist(tmp_path, length=6, rate=8)
    assert x.shape == (2, 6, 1) and y.tolist() == [3, 7] and speaker.tolist() == [1, 2]
    # 16 Hz -> 8 Hz keeps every other sample; the second clip (3 samples) is zero-padded
    expected0 = ramp[0:12:2] / 32768.0
    expected1 = np.concatenate([-ramp[0:6:2] / 32768.0, np.zeros(3)])
    np.testing.assert_allclose(x[0, :, 0].numpy(), expected0, rtol=1e-6)
    np.testing.assert_allclose(x[1, :, 0].numpy(), expected1, rtol=1e-6)


def test_load_audio_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="AudioMNIST .*0_01_0.wav"):
        data.load_audio_mnist(tmp_path)
    path = tmp_path / "01" / "0_01_0.wav"
    path.parent.mkdir()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(4, dtype="<i2").tobytes())
    with pytest.raises(ValueError, match="expected 16-bit mono PCM, got 16-bit with 2 channels"):
        data.load_audio_mnist(tmp_path)

"""ssm.causal_conv against torch.nn.functional.conv1d and a direct causal sum."""

import pytest
import torch
import torch.nn.functional as F

from ssm import causal_conv


def conv1d_reference(u, K):
    """Reference: causal convolution with conv1d (cross-correlation with a flipped kernel).

    u (B, H, L), K (H, L): left-pad by L-1 and use H groups, one kernel per channel.
    """
    H, L = K.shape
    return F.conv1d(F.pad(u, (L - 1, 0)), K.flip(-1)[:, None, :], groups=H)


@pytest.mark.parametrize("L", [1, 2, 7, 64, 129])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_conv1d(L, dtype):
    g = torch.Generator().manual_seed(L)
    u = torch.randn(2, 3, L, generator=g, dtype=dtype)
    K = torch.randn(3, L, generator=g, dtype=dtype)
    y = causal_conv(u, K)
    assert y.shape == (2, 3, L) and y.dtype == dtype
    # FFT round-off grows like log L * eps * ||K|| ||u||: 1e-4 (float32) / 1e-10 (float64).
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(y, conv1d_reference(u, K), rtol=tol, atol=tol)


@pytest.mark.parametrize("L", [1, 5, 32])
def test_complex_matches_direct_sum(L):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(L, generator=g, dtype=torch.complex128)
    K = torch.randn(L, generator=g, dtype=torch.complex128)
    direct = torch.stack([(K[: k + 1].flip(0) * u[: k + 1]).sum() for k in range(L)])
    torch.testing.assert_close(causal_conv(u, K), direct, rtol=1e-10, atol=1e-10)


def test_is_causal_not_circular():
    # An impulse at the last step must not wrap around to the first outputs.
    L = 8
    u = torch.zeros(L, dtype=torch.float64)
    u[-1] = 1.0
    K = torch.ones(L, dtype=torch.float64)
    y = causal_conv(u, K)
    expected = torch.zeros(L, dtype=torch.float64)
    expected[-1] = 1.0
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)


def test_long_sequence_finite():
    L = 16384
    u = torch.randn(L, generator=torch.Generator().manual_seed(0))
    K = 0.999 ** torch.arange(L, dtype=torch.float32)
    y = causal_conv(u, K)
    assert torch.isfinite(y).all()
    # Check a few outputs against the direct sum (float64), float32 FFT error ~1e-3 at L=16k.
    for k in [0, 1000, L - 1]:
        direct = (K[: k + 1].double().flip(0) * u[: k + 1].double()).sum()
        assert abs(float(y[k]) - float(direct)) < 1e-2


def test_gradients():
    u = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    K = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_conv, (u, K))


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"K: expected the length L = 5"):
        causal_conv(torch.zeros(5), torch.zeros(4))
    with pytest.raises(ValueError, match=r"K: leading dimensions \(3,\) do not broadcast"):
        causal_conv(torch.zeros(2, 5), torch.zeros(3, 5))
    with pytest.raises(TypeError, match=r"u: expected a torch.Tensor"):
        causal_conv([0.0, 1.0], torch.zeros(2))
    with pytest.raises(ValueError, match=r"K: expected shape \(\.\.\., L\)"):
        causal_conv(torch.zeros(2), torch.tensor(1.0))

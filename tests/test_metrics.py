import math

import pytest
import torch

from cachekit.metrics import mean_finite, psnr, ssim


def test_identical_images():
    x = torch.rand(3, 1, 16, 16)
    assert psnr(x, x) == [math.inf] * 3
    assert ssim(x, x) == pytest.approx([1.0] * 3)


def test_known_psnr():
    x = torch.full((2, 3, 8, 8), 0.5)
    y = x.clone()
    y[0] += 0.1                    # MSE 0.01 -> 20 dB
    y[1, :, :4] += 0.2             # half the pixels off by 0.2 -> MSE 0.02 -> 16.99 dB
    assert psnr(y, x) == pytest.approx([20.0, 10 * math.log10(50)], abs=1e-5)  # fp32 inputs


def test_ssim_drops_with_noise_and_handles_small_images():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)      # smaller than the default 11-pixel window
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s = ssim(noisy, x)
    assert all(0.0 < v < 0.95 for v in s)


def test_errors_and_mean():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match=r"expected images shaped \(B, C, H, W\)"):
        ssim(torch.zeros(4, 4), torch.zeros(4, 4))
    assert mean_finite([math.inf, 20.0, 30.0]) == 25.0 and mean_finite([math.inf]) == math.inf

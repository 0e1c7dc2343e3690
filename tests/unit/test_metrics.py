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


def moving_square(frames=9, size=32, speed=2, still=False):
    v = torch.zeros(frames, 1, size, size)
    for f in range(frames):
        x = 4 + (0 if still else speed * f)
        v[f, :, 12:20, x:x + 8] = 1.0
    return v


def test_video_proxies_on_known_motion():
    from cachekit.metrics import dynamic_degree, flow_magnitudes, motion_smoothness, temporal_flickering
    still, moving = moving_square(still=True), moving_square()
    assert temporal_flickering(still) == 1.0 and motion_smoothness(still) == 1.0
    # a 8-px-tall square moving 2 px/frame changes 2 * 2 * 8 pixels per frame out of 32 * 32
    assert temporal_flickering(moving) == pytest.approx(1 - 32 / 1024)
    # frames 0 and 2 cover columns 4-11 and 8-15, their average is 0.5 on 4-7 and 12-15; frame 1
    # covers 6-13: off by 0.5 on 8 columns x 8 rows -> 32 / 1024
    assert motion_smoothness(moving) == pytest.approx(1 - 32 / 1024)
    jitter = moving.clone()
    jitter[1::2] = torch.roll(jitter[1::2], 3, dims=-1)
    assert motion_smoothness(jitter) < motion_smoothness(moving)
    assert not dynamic_degree(still) and dynamic_degree(moving)
    mags = flow_magnitudes(moving)
    assert all(0.5 < m < 4 for m in mags)              # about 2 px of motion per frame
    with pytest.raises(ValueError, match=r"expected one clip shaped \(frames >= 2"):
        temporal_flickering(torch.zeros(9, 32, 32))

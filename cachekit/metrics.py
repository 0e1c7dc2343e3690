"""Quality of a cached output against the uncached one (same seeds).

PSNR and SSIM on [0, 1] images, per sample. PSNR from the sample's global MSE (inf when equal);
SSIM by torchmetrics (Gaussian window 11, sigma 1.5, data_range 1), which the ``[bench]`` extra
installs; it is imported only when asked for. Video: weight-free VBench-style proxies (temporal
flickering, motion smoothness, dynamic degree from OpenCV's Farneback optical flow).
"""

from __future__ import annotations

import math

import torch


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 3:
        raise ValueError(f"expected images shaped (B, C, H, W) or (B, H, W), got shape {tuple(x.shape)}")
    return x.unsqueeze(1) if x.dim() == 3 else x


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> list[float]:
    """Per-sample PSNR in dB; inf where the sample is identical."""
    if pred.shape != target.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    return [math.inf if m == 0 else 10 * math.log10(data_range ** 2 / float(m)) for m in mse]


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> list[float]:
    """Per-sample SSIM (1.0 where identical). Frames of a video: pass them as a batch."""
    if pred.shape != target.shape:
        raise ValueError(f"ssim: shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    try:
        from torchmetrics.functional.image import structural_similarity_index_measure as _ssim
    except ImportError:
        raise ImportError("SSIM needs torchmetrics: pip install 'cachekit[bench]'") from None
    p, t = _as_batch(pred).double(), _as_batch(target).double()
    # Images smaller than the 11-pixel window (8x8 digits) get a window that fits, with sigma
    # scaled alike (torchmetrics sizes the Gaussian from sigma: 3.5 sigma each side).
    k = min(11, p.shape[-1] - (1 - p.shape[-1] % 2), p.shape[-2] - (1 - p.shape[-2] % 2))
    vals = _ssim(p, t, data_range=data_range, kernel_size=k, sigma=1.5 * k / 11, reduction="none")
    return [float(v) for v in vals]


def mean_finite(values: list[float]) -> float:
    """Mean that reports inf only when every value is inf (identical outputs)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.inf


# ---- weight-free video proxies (VBench-style) -------------------------------------------------

def _clip(video: torch.Tensor) -> torch.Tensor:
    """(F, C, H, W) in [0, 1], float64; the layout is checked, not guessed."""
    if video.dim() != 4 or video.shape[1] not in (1, 3) or video.shape[0] < 2:
        raise ValueError(f"expected one clip shaped (frames >= 2, channels 1 or 3, H, W), got {tuple(video.shape)}")
    return video.double()


def temporal_flickering(video: torch.Tensor) -> float:
    """1 - mean absolute difference of consecutive frames (VBench's rule, on [0, 1] frames):
    1.0 for a still clip."""
    v = _clip(video)
    return 1.0 - float((v[1:] - v[:-1]).abs().mean())


def motion_smoothness(video: torch.Tensor) -> float:
    """1 - mean|f_{2k+1} - (f_{2k} + f_{2k+2}) / 2|: how well each odd frame is predicted by the
    average of its neighbours (a weight-free stand-in for VBench's frame-interpolation network)."""
    v = _clip(video)
    if v.shape[0] < 3:
        raise ValueError(f"motion smoothness needs >= 3 frames, got {v.shape[0]}")
    n = (v.shape[0] - 1) // 2
    mid = v[1:2 * n:2]
    interp = (v[0:2 * n - 1:2] + v[2:2 * n + 1:2]) / 2
    return 1.0 - float((mid - interp).abs().mean())


def flow_magnitudes(video: torch.Tensor) -> list[float]:
    """Per consecutive frame pair, the mean of the top 5% optical-flow magnitudes in pixels
    (OpenCV Farneback on grey frames; VBench takes the same statistic from RAFT)."""
    try:
        import cv2
    except ImportError:
        raise ImportError("dynamic degree needs OpenCV: pip install 'cachekit[bench]'") from None
    import numpy as np

    v = _clip(video)
    grey = (v.mean(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, pyr_scale=0.5, levels=2, winsize=5,
                                            iterations=3, poly_n=5, poly_sigma=1.1, flags=0)
        mag = np.sqrt((flow ** 2).sum(-1)).ravel()
        k = max(1, int(round(0.05 * mag.size)))
        out.append(float(np.sort(mag)[-k:].mean()))
    return out


def dynamic_degree(video: torch.Tensor, threshold: float | None = None) -> bool:
    """Is the clip dynamic? VBench's rule scaled to the frame size: enough frame pairs whose top-5%
    flow exceeds ``threshold`` (default 6 px per 256 px of the shorter side, at least 0.25 px)."""
    v = _clip(video)
    if threshold is None:
        threshold = max(0.25, 6.0 * min(v.shape[-2:]) / 256)
    mags = flow_magnitudes(v)
    needed = max(1, round(len(mags) / 4))  # VBench: 4 of 16 frame pairs
    return sum(m > threshold for m in mags) >= needed

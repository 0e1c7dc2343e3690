"""Quality of a cached output against the uncached one (same seeds).

PSNR and SSIM on [0, 1] images, per sample. PSNR from the sample's global MSE (inf when equal);
SSIM by torchmetrics (Gaussian window 11, sigma 1.5, data_range 1), which the ``[bench]`` extra
installs; it is imported only when asked for.
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
    # Images smaller than the 11-pixel window (8x8 digits) get a window that fits.
    k = min(11, p.shape[-1] - (1 - p.shape[-1] % 2), p.shape[-2] - (1 - p.shape[-2] % 2))
    vals = _ssim(p, t, data_range=data_range, kernel_size=k, reduction="none")
    return [float(v) for v in vals]


def mean_finite(values: list[float]) -> float:
    """Mean that reports inf only when every value is inf (identical outputs)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.inf

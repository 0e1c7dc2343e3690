"""Judges of the reference models' outputs: how a generated sample is scored against its request.

These are the automatic quality metrics the model cards report and ``cachekit eval`` uses
(:mod:`cachekit.evaluation.reference_models`); they need numpy and scikit-learn, not diffusers.
(Formerly ``cachekit.reference.judges``, which still imports as this module.)

Digits DiT (:func:`train_classifier`)
    An RBF SVC trained on the REAL 8x8 scikit-learn digits (pixels scaled to [0, 1], stratified
    80/20 split, seed 0); the *recognition rate* of generated digits is the fraction the classifier
    assigns to the requested class.

Moving-digits video model (:func:`score_clips`)
    * content: in every frame the 8x8 window centred on the ink centroid is cropped and classified
      by an RBF SVM trained on all 1797 real scikit-learn 8x8 digits, re-centred the same way (10
      classes, so a blob that looks like no trained content counts as wrong); the per-frame
      log-probabilities are summed over frames;
    * direction: the ink centroid of every frame (pixels above 0.25) is fitted by a line over
      frames; the dominant axis of the fitted displacement and its sign give up / down / left /
      right, and a displacement under 3 pixels (the real clips move 8) counts as no motion (wrong).

    ::

        from cachekit.evaluation.judges import score_clips
        result = score_clips(frames, contents, directions)   # frames (N, F, 1, H, W) in [0, 1]
        result["both_accuracy"], result["content_accuracy"], result["direction_accuracy"]

The scripts that run the models and print these scores are ``reference/eval_digits.py`` and
``reference/eval_video.py`` (outside the package).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np

__all__ = [
    "train_classifier",
    "digit_classifier",
    "predict_digits",
    "predict_direction",
    "score_clips",
    "INK_THRESHOLD",
    "MIN_DISPLACEMENT",
    "SPRITE",
]


# --------------------------------------------------------------------------------------------
# Digits DiT
# --------------------------------------------------------------------------------------------
def train_classifier(seed: int = 0):
    """SVC on the real digits, pixels scaled to [0, 1]. Returns (classifier, held-out accuracy)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.svm import SVC

    d = load_digits()
    x = d.data / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=seed)
    clf = SVC(kernel="rbf", C=10.0, gamma="scale").fit(xtr, ytr)
    return clf, float((clf.predict(xte) == yte).mean())


# --------------------------------------------------------------------------------------------
# Moving-digits video model
# --------------------------------------------------------------------------------------------
INK_THRESHOLD = 0.25
MIN_DISPLACEMENT = 3.0
SPRITE = 8


@functools.lru_cache(maxsize=1)
def digit_classifier():
    """RBF SVM (with probabilities) on all real scikit-learn 8x8 digits scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    d = load_digits()
    # Same preprocessing as at test time: paste each digit on a 16x16 canvas and take the
    # centroid-centred crop (so the classifier sees digits re-centred on their ink centroid).
    canvas = np.zeros((len(d.images), 16, 16), dtype=np.float32)
    canvas[:, 4:12, 4:12] = d.images / 16.0
    crops = np.stack([_crop_frame(c) for c in canvas])
    clf = SVC(C=10.0, gamma="scale", probability=True, random_state=0)
    clf.fit(crops, d.target)
    return clf


def _as_frames(frames) -> np.ndarray:
    try:
        import torch

        if isinstance(frames, torch.Tensor):
            frames = frames.detach().cpu().float().numpy()
    except ImportError:  # pragma: no cover
        pass
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim == 5:
        if x.shape[2] == 1:
            x = x[:, :, 0]
        elif x.shape[-1] == 1:
            x = x[..., 0]
        else:
            raise ValueError(f"expected one channel, got frames of shape {x.shape}")
    if x.ndim != 4:
        raise ValueError(f"expected frames (N, F, 1, H, W) or (N, F, H, W), got {x.shape}")
    return x


def _label_index(values, names: Sequence[str], digits: Sequence[int] | None = None) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, str):
            k = v.strip().lower()
            if k in names:
                out.append(list(names).index(k))
            elif digits is not None and k.isdigit() and int(k) in digits:
                out.append(list(digits).index(int(k)))
            else:
                raise ValueError(f"unknown label {v!r}; expected one of {list(names)}")
        else:
            out.append(int(v))
    return out


def predict_direction(clip: np.ndarray) -> tuple[int, tuple[float, float]]:
    """Direction index (into ``DIRECTION_NAMES``; -1 = no clear motion) and fitted (dy, dx)."""
    f, h, w = clip.shape
    ink = np.clip(clip - INK_THRESHOLD, 0, None)
    mass = ink.sum(axis=(1, 2))
    ok = mass > 1e-3
    if ok.sum() < 2:
        return -1, (0.0, 0.0)
    ys, xs = np.mgrid[0:h, 0:w]
    cy = (ink * ys).sum(axis=(1, 2))[ok] / mass[ok]
    cx = (ink * xs).sum(axis=(1, 2))[ok] / mass[ok]
    t = np.arange(f, dtype=np.float64)[ok]
    dy = np.polyfit(t, cy, 1)[0] * (f - 1)
    dx = np.polyfit(t, cx, 1)[0] * (f - 1)
    if max(abs(dy), abs(dx)) < MIN_DISPLACEMENT:
        return -1, (float(dy), float(dx))
    if abs(dy) >= abs(dx):
        return (1 if dy > 0 else 0), (float(dy), float(dx))  # down / up
    return (3 if dx > 0 else 2), (float(dy), float(dx))      # right / left


def _crop_frame(frame: np.ndarray) -> np.ndarray:
    """The 8x8 window centred (to the nearest pixel) on the frame's ink centroid, flattened."""
    h, w = frame.shape
    ink = np.clip(frame - INK_THRESHOLD, 0, None)
    m = ink.sum()
    if m <= 1e-6:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    else:
        ys, xs = np.mgrid[0:h, 0:w]
        cy, cx = (ink * ys).sum() / m, (ink * xs).sum() / m
    r = int(np.clip(np.rint(cy - (SPRITE - 1) / 2), 0, h - SPRITE))
    q = int(np.clip(np.rint(cx - (SPRITE - 1) / 2), 0, w - SPRITE))
    return frame[r:r + SPRITE, q:q + SPRITE].reshape(-1)


def _crops(clip: np.ndarray) -> np.ndarray:
    """Per frame, the centroid-centred 8x8 crop -> (F, 64)."""
    return np.stack([_crop_frame(fr) for fr in clip]).astype(np.float32)


def predict_digits(frames) -> np.ndarray:
    """Predicted digit (0..9) of each clip: classifier log-probabilities summed over frames."""
    x = _as_frames(frames)
    clf = digit_classifier()
    n, f = x.shape[:2]
    crops = np.concatenate([_crops(c) for c in x]) if n else np.zeros((0, 64), np.float32)
    logp = np.log(clf.predict_proba(np.clip(crops, 0, 1)) + 1e-9).reshape(n, f, -1).sum(1)
    return clf.classes_[logp.argmax(1)]


def score_clips(frames, contents: Sequence[str | int], directions: Sequence[str | int]) -> dict[str, Any]:
    """Score generated clips against the requested (content, direction) labels.

    ``frames``: ``(N, F, 1, H, W)`` (or ``(N, F, H, W)`` / ``(N, F, H, W, 1)``) in ``[0, 1]``,
    torch or numpy. ``contents``: names (``"zero"``...) or indices into ``CONTENT_NAMES``;
    ``directions``: names (``"up"``...) or indices into ``DIRECTION_NAMES``.
    Returns ``content_accuracy``, ``direction_accuracy``, ``both_accuracy`` (fractions), ``n``,
    per-condition both-correct rates and per-clip predictions.
    """
    from ..reference.video_conditions import CONTENT_DIGITS, CONTENT_NAMES, DIRECTION_NAMES

    x = _as_frames(frames)
    c_idx = _label_index(contents, CONTENT_NAMES, CONTENT_DIGITS)
    d_idx = _label_index(directions, DIRECTION_NAMES)
    if not (len(x) == len(c_idx) == len(d_idx)):
        raise ValueError(f"{len(x)} clips but {len(c_idx)} contents and {len(d_idx)} directions")
    digits = predict_digits(x)
    dirs = [predict_direction(clip) for clip in x]
    content_ok = np.array([int(digits[i]) == CONTENT_DIGITS[c] for i, c in enumerate(c_idx)], dtype=bool)
    direction_ok = np.array([dirs[i][0] == d for i, d in enumerate(d_idx)], dtype=bool)
    both = content_ok & direction_ok
    per_condition: dict[str, list[int]] = {}
    for i, (c, d) in enumerate(zip(c_idx, d_idx)):
        per_condition.setdefault(f"{CONTENT_NAMES[c]}/{DIRECTION_NAMES[d]}", []).append(int(both[i]))
    n = len(x)
    return {
        "n": n,
        "content_accuracy": float(content_ok.mean()) if n else float("nan"),
        "direction_accuracy": float(direction_ok.mean()) if n else float("nan"),
        "both_accuracy": float(both.mean()) if n else float("nan"),
        "per_condition_both": {k: sum(v) / len(v) for k, v in sorted(per_condition.items())},
        "clips": [
            {"content": CONTENT_NAMES[c], "direction": DIRECTION_NAMES[d], "pred_digit": int(digits[i]),
             "pred_direction": DIRECTION_NAMES[dirs[i][0]] if dirs[i][0] >= 0 else "none",
             "displacement_yx": [round(dirs[i][1][0], 2), round(dirs[i][1][1], 2)]}
            for i, (c, d) in enumerate(zip(c_idx, d_idx))
        ],
    }

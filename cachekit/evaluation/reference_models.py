"""Workloads for the reference models we train and ship (assets/)."""

from __future__ import annotations

from typing import Sequence

import torch

from .workloads import Workload


def digits_workload(steps: int | None = None) -> Workload:
    """The class-conditional digits DiT: inputs are class labels 0-9; extra metric: the share of
    samples a classifier trained on the real digits assigns to the requested class."""
    from ..reference import DEFAULT_CLASS_LABELS, load_digits_pipeline
    from ..reference.eval_digits import train_classifier

    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    n_steps = steps or pipe.default_num_inference_steps
    clf = []

    def generate(labels: Sequence, seed: int) -> torch.Tensor:
        with torch.no_grad():
            return pipe(class_labels=[int(c) for c in labels], num_inference_steps=n_steps,
                        generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").images

    def recognition(images: torch.Tensor, labels: Sequence) -> dict:
        if not clf:
            clf.append(train_classifier(0)[0])   # seconds; trained once per workload
        n_seeds = images.shape[0] // len(labels)
        want = torch.tensor([int(c) for c in labels] * n_seeds)
        # images are ordered seed-major, then by input: repeat the labels per seed
        pred = clf[0].predict(images.reshape(images.shape[0], -1).double().numpy())
        return {"class recognition": float((torch.from_numpy(pred) == want).float().mean())}

    return Workload("digits", "image", pipe, generate, list(DEFAULT_CLASS_LABELS), n_steps, recognition)

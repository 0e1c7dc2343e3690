"""Workloads for the reference models we train and ship (assets/)."""

from __future__ import annotations

from typing import Sequence

import torch

from .workloads import Workload


def digits_workload(steps: int | None = None) -> Workload:
    """The class-conditional digits DiT: inputs are class labels 0-9; extra metric: the share of
    samples a classifier trained on the real digits assigns to the requested class."""
    from ..reference import DEFAULT_CLASS_LABELS, load_digits_pipeline
    from .judges import train_classifier

    pipe = load_digits_pipeline()
    pipe.set_progress_bar_config(disable=True)
    n_steps = steps or pipe.default_num_inference_steps
    clf: list = []

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


def video_workload(steps: int | None = None) -> Workload:
    """The moving-digits Wan video model: an input is ``"content:direction"`` (e.g. ``"zero:up"``;
    contents zero/one/four/seven, directions up/down/left/right). Extra metrics: the share of clips
    whose content, direction, and both, the evaluator recovers (``evaluation.judges.score_clips``)."""
    from .judges import score_clips
    from ..reference.video import DEFAULT_CONDITIONS, load_video_pipeline, video_prompt_embeds
    from .workloads import WorkloadError

    pipe = load_video_pipeline()
    pipe.set_progress_bar_config(disable=True)
    n_steps = steps or pipe.default_num_inference_steps

    def split(inputs: Sequence) -> tuple[list[str], list[str]]:
        pairs = [str(s).split(":") for s in inputs]
        bad = [s for s, p in zip(inputs, pairs) if len(p) != 2]
        if bad:
            raise WorkloadError(f"video inputs are 'content:direction' (e.g. 'zero:up'); got {bad[0]!r}")
        return [p[0].strip() for p in pairs], [p[1].strip() for p in pairs]

    def generate(inputs: Sequence, seed: int) -> torch.Tensor:
        contents, directions = split(inputs)
        try:
            pe, npe = video_prompt_embeds(pipe, contents, directions)
        except ValueError as exc:
            raise WorkloadError(f"video input: {exc}") from None
        with torch.no_grad():
            return pipe(prompt_embeds=pe, negative_prompt_embeds=npe, num_inference_steps=n_steps,
                        generator=torch.Generator("cpu").manual_seed(seed), output_type="pt").frames

    def recovery(frames: torch.Tensor, inputs: Sequence) -> dict:
        contents, directions = split(inputs)
        n_seeds = frames.shape[0] // len(inputs)     # outputs are seed-major, then by input
        r = score_clips(frames, contents * n_seeds, directions * n_seeds)
        return {"content recovered": r["content_accuracy"], "direction recovered": r["direction_accuracy"],
                "both recovered": r["both_accuracy"]}

    inputs = [f"{c}:{d}" for c, d in DEFAULT_CONDITIONS]
    return Workload("video", "video", pipe, generate, inputs, n_steps, recovery)

"""Zero-argument model factories for CLI tests (``--model cli_models:NAME``)."""

import torch

from cachekit.evaluation import Workload
from tiny_pipelines import build, call_kwargs, output_tensor


def tiny_dit():
    pipe = build("dit")

    def generate(labels, seed):
        kw = call_kwargs("dit", pipe, steps=6, seed=seed, batch=len(labels))
        kw["class_labels"] = [int(c) for c in labels]
        with torch.no_grad():
            return output_tensor("dit", pipe(**kw)).clamp(0, 1)

    return Workload("tiny-dit", "image", pipe, generate, [1, 2, 3, 4], 6)


def tiny_wan():
    pipe = build("wan")

    def generate(prompts, seed):
        out = []
        for i, _ in enumerate(prompts):
            kw = call_kwargs("wan", pipe, steps=6, seed=seed, prompt_variant=i, frames=9)
            with torch.no_grad():
                lat = output_tensor("wan", pipe(**kw))        # (1, C, F, H, W) latents
            out.append(torch.sigmoid(lat[:, :3].permute(0, 2, 1, 3, 4)))  # as (1, F, 3, H, W) in [0, 1]
        return torch.cat(out)

    return Workload("tiny-wan", "video", pipe, generate, ["a", "b"], 6)


def not_a_model():
    return 42

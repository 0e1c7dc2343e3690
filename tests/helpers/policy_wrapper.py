"""A Diffusion-Policy-shaped wrapper around toy.ToyPolicy with a diffusers scheduler (kept out of
toy.py, which tests/unit/ imports and which must not reach diffusers)."""

import torch
from torch import nn

from toy import ToyPolicy


class PolicyWrapper(nn.Module):
    """Like Diffusion Policy's wrapper: holds the denoiser as ``.model`` and a diffusers scheduler;
    its own forward is never called during sampling."""

    def __init__(self):
        super().__init__()
        from diffusers import DDPMScheduler

        self.model = ToyPolicy()
        self.scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")

    @torch.no_grad()
    def predict(self, steps: int = 10, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 4, 2, generator=g)
        cond = torch.randn(2, 2, 3, generator=g)
        self.scheduler.set_timesteps(steps)
        for t in self.scheduler.timesteps:
            x = self.scheduler.step(self.model(x, t, cond), t, x, generator=g).prev_sample
        return x

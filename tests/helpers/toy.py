"""Models whose outputs can be worked out by hand.

Block i adds (i + 1) * t to its input, so a stack of n blocks adds t * n(n+1)/2: a reused step's
output is the current input plus that sum at the last computed step's t.

torch only: tests/unit/ uses these (tests/house/test_unit_rule.py checks that nothing it imports
reaches diffusers); PolicyWrapper, which holds a diffusers scheduler, is in policy_wrapper.py.
"""

import torch
from torch import nn


class AddBlock(nn.Module):
    def __init__(self, i: int):
        super().__init__()
        self.i = i

    def forward(self, hidden_states, t):
        return hidden_states + (self.i + 1) * t


class TwoStreamBlock(nn.Module):
    """Returns (context, hidden) like Flux: hidden += (i+1) t, context += 10 t."""

    def __init__(self, i: int):
        super().__init__()
        self.i = i

    def forward(self, hidden_states, encoder_hidden_states, t):
        return encoder_hidden_states + 10 * t, hidden_states + (self.i + 1) * t


class Toy(nn.Module):
    def __init__(self, n: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList(AddBlock(i) for i in range(n))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, timestep):
        t = timestep.reshape(-1)[0] if isinstance(timestep, torch.Tensor) else timestep
        for b in self.blocks:
            x = b(x, t)
        return x * self.scale


class ToyTwoStream(nn.Module):
    def __init__(self, n: int = 3):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(TwoStreamBlock(i) for i in range(n))

    def forward(self, x, context, timestep):
        for b in self.transformer_blocks:
            context, x = b(hidden_states=x, encoder_hidden_states=context, t=timestep)
        return x, context


class ToyPolicy(nn.Module):
    """Diffusion-Policy-shaped: action tokens through pre-norm nn.TransformerDecoder layers that
    cross-attend to (time token + observation tokens)."""

    def __init__(self, layers: int = 3, dim: int = 16, action_dim: int = 2, obs_dim: int = 3):
        super().__init__()
        self.inp = nn.Linear(action_dim, dim)
        self.obs = nn.Linear(obs_dim, dim)
        self.time = nn.Linear(1, dim)
        layer = nn.TransformerDecoderLayer(dim, 2, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.head = nn.Linear(dim, action_dim)

    def forward(self, sample, timestep, cond):
        t = timestep.reshape(-1, 1, 1).float().expand(sample.shape[0], 1, 1) / 100
        memory = torch.cat([self.time(t), self.obs(cond)], dim=1)
        return self.head(self.decoder(self.inp(sample), memory))


@torch.no_grad()
def denoise(model, steps: int = 10, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 2, generator=g)
    cond = torch.randn(batch, 2, 3, generator=g)
    for t in range(steps - 1, -1, -1):
        x = x - 0.1 * model(x, torch.tensor(t), cond)
    return x

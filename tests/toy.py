"""Models whose outputs can be worked out by hand.

Block i adds (i + 1) * t to its input, so a stack of n blocks adds t * n(n+1)/2: a reused step's
output is the current input plus that sum at the last computed step's t.
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

"""Reference diffusion policy: a transformer denoiser in the style of Diffusion Policy's
``TransformerForDiffusion`` (Chi et al., 2023), written from scratch for cachekit.

The model is the thing cachekit caches: it holds exactly one ``nn.ModuleList`` of transformer blocks
(``model.decoder.layers``, 8 pre-norm ``nn.TransformerDecoderLayer``), called once per denoising step
inside :meth:`DiffusionPolicy.predict_action` (100 DDPM steps by default).

    from cachekit.reference.policy import load_policy
    policy = load_policy()                          # shipped point-mass weights, offline, .eval()
    actions = policy.predict_action(obs_history)    # (B, 2, obs_dim) env states -> (B, 8, 2) targets

The shipped policy solves the point-mass task of :mod:`cachekit.evaluation.tasks.pointmass` (``obs_dim = 4``:
``[x, y, goal_x, goal_y]``, identity features). The same code also serves gym-pusht state observations
(``obs_dim = 5``, ``obs_transform="pusht_angle"``: the block angle wraps at 2*pi, so it becomes cos/sin and
``cond_dim = 6``). Observations and actions are min-max normalised to [-1, 1] with statistics stored
next to the weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from ..errors import PolicyLoadError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = [
    "PolicyConfig",
    "TransformerForDiffusion",
    "DiffusionPolicy",
    "PolicyLoadError",
    "load_policy",
    "default_policy_dir",
    "make_scheduler",
    "WEIGHTS_NAME",
    "CONFIG_NAME",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
ASSET_DIR_NAME = "pointmass_policy"


@dataclass
class PolicyConfig:
    """Model and task settings, stored in ``config.json`` next to the weights."""

    obs_dim: int = 5            # raw environment state per step
    cond_dim: int = 6           # model features per step (angle -> cos, sin)
    obs_transform: str = "pusht_angle"   # or "identity" (cond_dim == obs_dim)
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    n_emb: int = 128
    n_layer: int = 8
    n_head: int = 4
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.0
    causal_attn: bool = True
    num_train_timesteps: int = 100
    num_inference_steps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def make_scheduler(cfg: PolicyConfig):
    """The DDPM scheduler used for training and sampling (diffusers)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=cfg.clip_sample,
    )


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) timesteps -> (B, dim) sin/cos embedding, as in DDPM / Diffusion Policy."""
    half = dim // 2
    scale = math.log(10000.0) / (half - 1)
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -scale)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class TransformerForDiffusion(nn.Module):
    """Noise-prediction transformer over an action sequence, conditioned on time + observations.

    Tokens: the noisy action sequence (``horizon`` tokens, learned position embedding) is the decoder
    input; the conditioning memory is ``[time token, obs token 1, ..., obs token n_obs_steps]`` with its own
    learned position embedding, refined by a small MLP (no transformer layers). The decoder is
    ``nn.TransformerDecoder`` of ``n_layer`` pre-norm ``nn.TransformerDecoderLayer`` blocks (self-attention,
    cross-attention to the memory, GELU FFN), followed by LayerNorm and a linear head.

    With ``causal_attn`` (default, as Diffusion Policy's state-based PushT setting): action token ``i``
    attends to action tokens ``<= i`` and to memory tokens ``s`` with ``i >= s - 1`` (the time token and
    the first observation are always visible; later observations from the matching step on).
    """

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        E, T, S = cfg.n_emb, cfg.horizon, 1 + cfg.n_obs_steps
        self.input_emb = nn.Linear(cfg.action_dim, E)
        self.pos_emb = nn.Parameter(torch.zeros(1, T, E))
        self.cond_obs_emb = nn.Linear(cfg.cond_dim, E)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, S, E))
        self.drop = nn.Dropout(cfg.p_drop_emb)
        self.cond_mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.Mish(), nn.Linear(4 * E, E))
        layer = nn.TransformerDecoderLayer(
            d_model=E, nhead=cfg.n_head, dim_feedforward=4 * E, dropout=cfg.p_drop_attn,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layer)
        self.ln_f = nn.LayerNorm(E)
        self.head = nn.Linear(E, cfg.action_dim)
        if cfg.causal_attn:
            ti = torch.arange(T)
            causal = ti[None, :] > ti[:, None]                          # True = blocked
            t_idx, s_idx = torch.meshgrid(torch.arange(T), torch.arange(S), indexing="ij")
            mem = ~(t_idx >= (s_idx - 1))
            self.register_buffer("tgt_mask", torch.zeros(T, T).masked_fill(causal, float("-inf")), persistent=False)
            self.register_buffer("memory_mask", torch.zeros(T, S).masked_fill(mem, float("-inf")), persistent=False)
        else:
            self.tgt_mask = None
            self.memory_mask = None
        self.apply(self._init_weights)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.normal_(self.cond_pos_emb, std=0.02)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.normal_(m.in_proj_weight, std=0.02)
            nn.init.zeros_(m.in_proj_bias)
            nn.init.zeros_(m.out_proj.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, sample: torch.Tensor, timestep, cond: torch.Tensor) -> torch.Tensor:
        """sample (B, horizon, action_dim), timestep (B,) or scalar, cond (B, n_obs_steps, cond_dim)
        -> predicted noise (B, horizon, action_dim)."""
        B, T, _ = sample.shape
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=sample.device)
        timestep = timestep.reshape(-1).to(sample.device)
        if timestep.numel() == 1:
            timestep = timestep.expand(B)
        t_tok = sinusoidal_embedding(timestep, self.cfg.n_emb).to(sample.dtype)[:, None, :]
        memory = torch.cat([t_tok, self.cond_obs_emb(cond)], dim=1)
        memory = self.cond_mlp(self.drop(memory + self.cond_pos_emb[:, : memory.shape[1]]))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, :T])
        x = self.decoder(
            x, memory,
            tgt_mask=None if self.tgt_mask is None else self.tgt_mask[:T, :T],
            memory_mask=None if self.memory_mask is None else self.memory_mask[:T, : memory.shape[1]],
        )
        return self.head(self.ln_f(x))


class DiffusionPolicy(nn.Module):
    """Model + DDPM scheduler + min-max normalisers (observation features and actions to [-1, 1])."""

    def __init__(self, cfg: PolicyConfig, stats: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = TransformerForDiffusion(cfg)
        self.scheduler = make_scheduler(cfg)
        stats = stats or {}
        ones = lambda n: torch.ones(n)  # noqa: E731
        self.register_buffer("obs_min", torch.as_tensor(stats.get("obs_min", -ones(cfg.cond_dim)), dtype=torch.float32))
        self.register_buffer("obs_max", torch.as_tensor(stats.get("obs_max", ones(cfg.cond_dim)), dtype=torch.float32))
        self.register_buffer("act_min", torch.as_tensor(stats.get("act_min", -ones(cfg.action_dim)), dtype=torch.float32))
        self.register_buffer("act_max", torch.as_tensor(stats.get("act_max", ones(cfg.action_dim)), dtype=torch.float32))

    # -- normalisation -------------------------------------------------------------------------------
    @staticmethod
    def obs_features(obs: torch.Tensor, kind: str = "pusht_angle") -> torch.Tensor:
        """Raw env state -> model features. ``"pusht_angle"``: (..., 5) -> (..., 6) agent xy, block xy,
        cos(angle), sin(angle); ``"identity"``: unchanged."""
        if kind == "identity":
            return obs
        ang = obs[..., 4:5]
        return torch.cat([obs[..., :4], torch.cos(ang), torch.sin(ang)], dim=-1)

    @staticmethod
    def _scale(x, lo, hi):
        return (x - lo) / (hi - lo).clamp_min(1e-6) * 2.0 - 1.0

    @staticmethod
    def _unscale(x, lo, hi):
        return (x + 1.0) / 2.0 * (hi - lo).clamp_min(1e-6) + lo

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self._scale(self.obs_features(obs.float(), self.cfg.obs_transform), self.obs_min, self.obs_max)

    def normalize_action(self, act: torch.Tensor) -> torch.Tensor:
        return self._scale(act.float(), self.act_min, self.act_max)

    def unnormalize_action(self, act: torch.Tensor) -> torch.Tensor:
        return self._unscale(act, self.act_min, self.act_max)

    def stats(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("obs_min", "obs_max", "act_min", "act_max")}

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(self, cond: torch.Tensor, generator: torch.Generator | list | None = None,
                       num_inference_steps: int | None = None) -> torch.Tensor:
        """Normalised cond (B, n_obs_steps, cond_dim) -> normalised action sequence (B, horizon, action_dim).
        ``generator``: one, or a list of B (row i's noise then depends on nothing but its generator,
        so a closed-loop episode's actions do not change with the batch it shares)."""
        cfg = self.cfg
        B = cond.shape[0]
        steps = cfg.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        shape = (cfg.horizon, cfg.action_dim)
        if isinstance(generator, (list, tuple)):   # one noise stream per row (diffusers' randn_tensor convention)
            if len(generator) != B:
                raise ValueError(f"{len(generator)} generators for a batch of {B}")
            x = torch.cat([torch.randn((1, *shape), generator=g, device=cond.device, dtype=cond.dtype) for g in generator])
            generator = list(generator)
        else:
            x = torch.randn((B, *shape), generator=generator, device=cond.device, dtype=cond.dtype)
        self.scheduler.set_timesteps(steps, device=cond.device)
        for t in self.scheduler.timesteps:
            eps = self.model(x, t, cond)
            x = self.scheduler.step(eps, t, x, generator=generator).prev_sample
        return x

    @torch.no_grad()
    def predict_action(self, obs_history: torch.Tensor, generator: torch.Generator | None = None,
                       num_inference_steps: int | None = None) -> torch.Tensor:
        """(B, n_obs_steps, obs_dim) raw env states (oldest first) -> (B, n_action_steps, action_dim)
        agent target positions in env units, to execute in order. Runs the full DDPM loop
        (``cfg.num_inference_steps`` = 100 by default). Pass a seeded ``generator`` for determinism."""
        cfg = self.cfg
        obs_history = torch.as_tensor(obs_history)
        if obs_history.dim() != 3 or obs_history.shape[1:] != (cfg.n_obs_steps, cfg.obs_dim):
            raise ValueError(f"obs_history must be (B, {cfg.n_obs_steps}, {cfg.obs_dim}), got {tuple(obs_history.shape)}")
        dev = self.obs_min.device
        cond = self.normalize_obs(obs_history.to(dev))
        x = self.sample_actions(cond, generator=generator, num_inference_steps=num_inference_steps)
        start = cfg.n_obs_steps - 1
        return self.unnormalize_action(x[:, start:start + cfg.n_action_steps])

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, directory, extra: dict | None = None) -> Path:
        """Write ``model.safetensors`` (model weights) and ``config.json`` (config, stats, scheduler)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(sd, str(d / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = asdict(self.cfg)
        if extra:
            cfg["extra"] = {**cfg.get("extra", {}), **extra}
        doc = {
            "model_class": "TransformerForDiffusion",
            "model": {k: v for k, v in cfg.items() if k != "extra"},
            "normalization": {"type": "min-max to [-1, 1]", "obs_transform": self.cfg.obs_transform, **self.stats()},
            "scheduler": dict(self.scheduler.config),
            "task": cfg.get("extra", {}),
        }
        (d / CONFIG_NAME).write_text(json.dumps(doc, indent=2, default=str) + "\n")
        return d


def default_policy_dir() -> Path:
    """Folder of the shipped policy (``assets/pointmass_policy`` in the repo or installed package)."""
    from cachekit.reference import asset_path

    return Path(asset_path(ASSET_DIR_NAME))


def load_policy(path=None, device="cpu") -> DiffusionPolicy:
    """Load the shipped policy (or the one in ``path``: a folder or its ``model.safetensors``) offline,
    from safetensors only, and return it in ``.eval()`` mode. Raises :class:`PolicyLoadError` naming the
    file when the weights or config are missing or corrupted."""
    from safetensors.torch import load_file

    try:
        from safetensors import SafetensorError as _StErr
    except ImportError:  # pragma: no cover - older safetensors
        _StErr = RuntimeError

    p = Path(path) if path is not None else default_policy_dir()
    if p.suffix == ".safetensors":
        wfile, cfile = p, p.with_name(CONFIG_NAME)
    else:
        wfile, cfile = p / WEIGHTS_NAME, p / CONFIG_NAME
    for f in (wfile, cfile):
        if not f.is_file():
            raise PolicyLoadError(f"policy file not found: {f}")
    try:
        doc = json.loads(cfile.read_text())
        cfg = PolicyConfig.from_dict(doc["model"])
        stats = {k: doc["normalization"][k] for k in ("obs_min", "obs_max", "act_min", "act_max")}
        cfg.extra = doc.get("task", {})
    except (ValueError, KeyError, TypeError) as e:
        raise PolicyLoadError(f"corrupted policy config file {cfile}: {e}") from e
    try:
        sd = load_file(str(wfile), device="cpu")
    except (_StErr, OSError, ValueError, RuntimeError) as e:
        raise PolicyLoadError(f"corrupted policy weight file {wfile}: {e}") from e
    policy = DiffusionPolicy(cfg, stats)
    try:
        policy.model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise PolicyLoadError(f"policy weight file {wfile} does not match the model config {cfile}: {e}") from e
    return policy.to(device).eval()

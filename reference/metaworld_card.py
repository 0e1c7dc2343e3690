"""Write ``MODEL_CARD.md`` for a Meta-World policy from its ``config.json`` and its benchmark result.

    python reference/metaworld_card.py reference_weights/metaworld_push_policy eval/results/policy_metaworld/push-v3.json

Every figure in the card is read from those two files (the training command, data, seeds and
wall times that ``reference/train_policy.py`` stored; the uncached row of ``eval/bench_metaworld.py``).
"""

from __future__ import annotations

import json
from pathlib import Path


SHARED = "a 2-core CPU shared with the other trainings of this set (four ran at once, one thread each)"


def card(asset: Path, bench: dict | None, machine: str = SHARED) -> str:
    doc = json.loads((asset / "config.json").read_text())
    m, task = doc["model"], doc["task"]
    ex, tr = task["expert"], task["train"]
    name = task["task_name"]
    lines = [
        f"# Reference diffusion policy: Meta-World {name.split(':', 1)[1]} (`{asset.name}`)", "",
        "A transformer diffusion policy in Diffusion Policy's DP-T layout (`cachekit/reference/policy.py`: "
        "`nn.TransformerDecoder` over the noisy action chunk, with the time token and observation tokens as "
        "cross-attention memory), trained here on CPU on demonstrations from Meta-World's scripted expert "
        f"(`metaworld.policies.{task.get('expert_policy', '?')}`). cachekit caches its {m['n_layer']} decoder "
        f"layers, which run {m['num_inference_steps']} times (DDPM) per `predict_action` call.", "",
        "```python",
        "from cachekit.reference.policy import load_policy",
        "from cachekit.evaluation.tasks import metaworld as mw",
        f"policy = load_policy(\"{asset.parent.name}/{asset.name}\")",   # assets/ or reference_weights/
        f"res = mw.evaluate(policy, \"{name}\", episodes=200, seed=0)   # batched closed loop",
        "```", "",
        "| | |", "|---|---|",
        f"| observation | {task['obs']}, history {m['n_obs_steps']} (identity features, min-max to [-1, 1]; dims "
        "constant in the demos get a span of 2) |",
        f"| action | {task['action']}: horizon {m['horizon']}, {m['n_action_steps']} executed per prediction |",
        f"| model | d_model {m['n_emb']}, {m['n_layer']} pre-norm `nn.TransformerDecoderLayer`s, {m['n_head']} heads, "
        f"causal; {tr['n_params']:,} parameters |",
        f"| scheduler | DDPM, {m['num_train_timesteps']} train steps, {m['num_inference_steps']} at inference, "
        f"{m['beta_schedule']}, epsilon prediction |",
        f"| environment | {task['env']}; success = {task['success']}; at most {task['max_episode_steps']} steps |", "",
        "## Data and training", "",
        f"* Demonstrations: {ex['episodes']} expert episodes on env seeds {ex['seeds'][0]}-{ex['seeds'][1]}; expert "
        f"success {ex['success_rate']:.3f}; the {ex['kept_demos']} successful episodes kept up to their success step "
        f"({ex['kept_steps']:,} steps, mean length {ex['mean_episode_length_kept']:.0f}; {tr['windows']:,} training "
        f"windows). Collection took {ex['collect_wall_s']:.0f} s.",
        f"* Training: epsilon MSE, AdamW (lr {tr['lr']}, weight decay {tr['weight_decay']}), cosine decay, batch "
        f"{tr['batch_size']}, {tr['steps_done']:,} of {tr['steps_planned']:,} planned steps"
        + (" (stopped early by --max-train-minutes)" if tr["stopped_early"] else "")
        + f", EMA {tr['ema_decay']} (shipped), seed {tr['seed']}, {tr['threads']} torch thread"
        + ("s" if tr["threads"] != 1 else "") + "; final loss (mean of "
        f"the last 100 steps) {tr['final_loss_avg100']:.4f}.",
        f"* Command: `{tr['command']}`",
        f"* Wall time: {tr['total_wall_s'] / 60:.1f} min in all (training {tr['train_wall_s'] / 60:.1f} min), on "
        f"{machine}.", "",
        "## Closed-loop success", "",
    ]
    if bench is None:
        lines.append("Not measured yet.")
    else:
        b, meta = bench["rows"][0], bench["meta"]
        lines += [
            f"**Uncached success {b['success']:.3f} [{b['ci_lo']:.3f}, {b['ci_hi']:.3f}]** (Wilson 95%) over "
            f"{b['episodes']} episodes (env seeds {meta['eval_seeds'][0]}-{meta['eval_seeds'][1]}, scenes never seen in "
            f"training)" + ("" if b["mean_episode_length"] is None else f", mean episode length {b['mean_episode_length']:.0f} steps")
            + "; from the uncached row of "
            f"`{meta['command']}` (eval/results/policy_metaworld/{meta['task']}.md, where every cachekit method is "
            "measured on the same episodes)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("asset")
    ap.add_argument("bench_json", nargs="?")
    ap.add_argument("--machine", default=SHARED, help="where the training ran, for the wall-time line")
    args = ap.parse_args(argv)
    asset = Path(args.asset)
    bench = json.loads(Path(args.bench_json).read_text()) if args.bench_json else None
    (asset / "MODEL_CARD.md").write_text(card(asset, bench, args.machine))
    print(f"wrote {asset / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    main()

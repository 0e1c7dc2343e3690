"""The ``cachekit`` command: demo, eval, sweep, tune, calibrate.

Every command has ``--help``; bad input exits with status 2 and one line on stderr naming it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from typing import Any, Sequence

import torch
import yaml

from .config import CacheConfig, ConfigError, config_classes
from .errors import CLIError  # noqa: F401 - defined in errors.py, importable here as before

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cache config (one of)")
    g.add_argument("--recipe", help="packaged recipe name (e.g. wan) or path to a recipe YAML")
    g.add_argument("--method", choices=sorted(config_classes()), help="method name, with --set")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting, e.g. --set threshold=0.05 (repeatable)")


def config_from_args(args: argparse.Namespace, default_recipe: str | None = None) -> CacheConfig:
    from .recipe import load_recipe

    if args.recipe and args.method:
        raise CLIError("give --recipe or --method, not both")
    if args.method:
        settings: dict[str, Any] = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise CLIError(f"--set expects KEY=VALUE, got {item!r}")
            settings[key.strip()] = yaml.safe_load(value)
        return config_classes()[args.method].from_settings(settings)
    if args.set:
        raise CLIError("--set needs --method")
    name = args.recipe or default_recipe
    if name is None:
        raise CLIError("give --recipe NAME|PATH or --method NAME [--set KEY=VALUE ...]")
    return load_recipe(name).config


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import evaluate, load_workload

    if args.model == "policy":
        from .evaluation.policy import evaluate_policy, markdown

        config = config_from_args(args, default_recipe="policy")
        rep = evaluate_policy(config, episodes=args.episodes, seed=args.seeds[0], repeats=args.repeats,
                              out_dir=args.out, command=args.command_line)
        print(markdown(rep))
        print(f"wrote {args.out}/report.json, report.md")
        return 0

    workload = load_workload(args.model, args.steps)
    config = config_from_args(args, default_recipe=None if args.recipe or args.method else _recipe_for(workload))
    rep = evaluate(workload, config, _inputs(args, "", workload), args.seeds, batch_size=args.batch_size, repeats=args.repeats,
                   out_dir=args.out, progress=not args.quiet, command=args.command_line)
    if not rep:
        return 0   # a non-main process of a sharded run: the main process writes the report
    from .evaluation.report import markdown

    print(markdown(rep))
    print(f"wrote {args.out}/report.json, report.md and PNGs")
    return 0


def _inputs(args: argparse.Namespace, prefix: str, workload: Any, fallback: Any = None) -> list:
    from .evaluation import read_inputs

    prompts, labels = getattr(args, f"{prefix}prompts"), getattr(args, f"{prefix}labels")
    if prompts and labels:
        raise CLIError(f"give --{prefix.replace('_', '-')}prompts or --{prefix.replace('_', '-')}labels, not both")
    inputs = read_inputs(prompts) if prompts else labels or fallback or workload.default_inputs
    if not inputs:
        raise CLIError("no inputs: give a prompts file or class labels")
    return list(inputs)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .evaluation import load_workload
    from .evaluation.sweep import grid_configs, sweep

    if not args.grids:
        raise CLIError("give at least one --method NAME followed by --SETTING lo:hi:n|a,b,c")
    configs = [c for method, specs in args.grids for c in grid_configs(method, specs)]
    workload = load_workload(args.model, args.steps)
    rep = sweep(workload, configs, _inputs(args, "", workload), args.seeds, batch_size=args.batch_size,
                repeats=args.repeats, out_dir=args.out, progress=not args.quiet,
                command=args.command_line)
    from .evaluation.sweep import markdown

    print(markdown(rep))
    print(f"wrote {args.out}/sweep.json, sweep.md, pareto.png")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .evaluation import load_workload
    from .evaluation.tune import SEARCH_SPACES, TuneFailed, tune

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in SEARCH_SPACES]
    if unknown:
        raise CLIError(f"cannot tune method {unknown[0]!r}; tunable: {', '.join(SEARCH_SPACES)}")
    if args.target_psnr is None and args.max_ssim_drop is None:
        raise CLIError("give a quality target: --target-psnr DB and/or --max-ssim-drop X")
    workload = load_workload(args.model, args.steps)
    calib = _inputs(args, "calib_", workload)
    holdout = _inputs(args, "holdout_", workload, fallback=calib)
    if set(args.calib_seeds) & set(args.holdout_seeds) and holdout == calib:
        raise CLIError("held-out inputs equal the calibration inputs: use other --holdout-seeds or inputs")
    try:
        res = tune(workload, methods, calib, args.calib_seeds, holdout, args.holdout_seeds,
                   target_psnr=args.target_psnr, max_ssim_drop=args.max_ssim_drop, batch_size=args.batch_size,
                   repeats=args.repeats, out=args.out, progress=not args.quiet, command=args.command_line)
    except TuneFailed as e:
        print(f"cachekit tune: {e}", file=sys.stderr)
        return 1
    h = res["measured"]["holdout"]
    print(f"best: {res['config']}\nheld-out: speedup {h['speedup']:.2f}x, computed fraction "
          f"{h['computed_fraction']:.3f}, PSNR {h['psnr_mean']:.2f} dB, SSIM {h['ssim_mean']:.4f}\n"
          f"wrote {res['recipe']} (use: cachekit.apply(pipe, {res['recipe']!r})) and {res['log']}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .adapters import find_model
    from .calibration import calibrate, save
    from .evaluation import load_workload
    from .evaluation.runner import environment
    from .methods.schedule import ScheduleConfig

    if args.method != "bac" and (args.fraction is None) == (args.max_error is None):
        raise CLIError(f"cachekit calibrate --method {args.method}: give exactly one of --fraction and --max-error")
    if args.model == "policy":
        workload, runs, inputs = _policy_calibration(args)
    else:
        workload = load_workload(args.model, args.steps)
        inputs = _inputs(args, "", workload)
        chunks = [inputs[i:i + args.batch_size] for i in range(0, len(inputs), args.batch_size)]
        runs = [(lambda c=c, s=s: workload.generate(c, s)) for s in args.seeds for c in chunks]
    options: dict[str, Any] = {
        "bac": {"updates": args.updates, "top_n": args.top_n, "metric": args.metric},
        "ertacache": {"correction": args.correction, "warmup": args.warmup},
        "lemica": {} if args.max_error is not None else {"refine": args.refine},
    }[args.method]
    budget = {} if args.method == "bac" else {"fraction": args.fraction, "max_error": args.max_error}
    t0 = time.time()
    with tqdm(desc="calibrate", disable=args.quiet, unit="run", total=None if args.method == "lemica" else len(runs)) as bar:
        cal = calibrate(workload.target, runs, args.method, progress=bar, max_skip=args.max_skip,
                        template=ScheduleConfig(units=args.units, forecast=args.forecast), **budget, **options)
    env = environment(args.command_line)
    extra = {"seconds": round(time.time() - t0, 1)} if args.method == "lemica" else {}
    save(cal, args.out, model_class=type(find_model(workload.target)[0]).__name__,
         source=f"calibrated by `{args.command_line}` ({env['device']})",
         calibration={"inputs": [str(i) for i in inputs], "seeds": list(args.seeds), **extra},
         steps=cal.config.num_steps, model=workload.name, device=env["device"])
    print(f"wrote {args.out}: {cal.summary}")
    return 0


def _policy_calibration(args: argparse.Namespace) -> tuple[Any, list, list]:
    """Calibration runs for the reference policy: predictions on observation histories met by the
    uncached policy in closed loop (episode seeds from --seeds; --batch-size histories per run)."""
    import torch

    from .evaluation.policy import load_reference_policy, rollout_observations
    from .evaluation.workloads import Workload

    policy = load_reference_policy()
    obs = [o for s in args.seeds for o in rollout_observations(policy, episodes=args.episodes, seed=s)]
    obs = torch.cat(obs)
    batches = [obs[i:i + args.batch_size] for i in range(0, len(obs), args.batch_size)]
    runs = [(lambda b=b, k=k: policy.predict_action(b, generator=torch.Generator().manual_seed(k)))
            for k, b in enumerate(batches)]
    workload = Workload("policy", "policy", policy, lambda *_: None, [], policy.cfg.num_inference_steps)
    return workload, runs, [f"{len(obs)} observation histories from episodes with seeds {list(args.seeds)}"]


def _recipe_for(workload: Any) -> str:
    from .adapters import find_model
    from .recipe import recipe_for_model

    return recipe_for_model(type(find_model(workload.target)[0]).__name__).path


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.model == "policy":   # closed-loop episodes, not generations: its own module
        from .demo_policy import run_policy_demo

        return run_policy_demo(out=args.out, repeats=max(args.repeats or 5, 5))
    from .demo import run_demo

    return run_demo(out=args.out, steps=args.steps, repeats=args.repeats, recipe=args.recipe, model=args.model)


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.tune import __doc__ as tune_doc

    ap = argparse.ArgumentParser(prog="cachekit", description="Training-free caching for diffusion transformers.")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="uncached vs cached on a shipped reference model: speed, quality, plots",
                       description="Runs a shipped reference model (default: the digits DiT) uncached and with its "
                                   "recipe (same seeds, same process); prints a table and writes samples.png and "
                                   "plan.png.")
    d.add_argument("--model", choices=("digits", "video", "policy"), default="digits",
                   help="digits (class-conditional DiT), video (moving-digits Wan) or policy (Meta-World door-open-v3 "
                        "diffusion policy, needs the [metaworld] extra) (default: %(default)s)")
    d.add_argument("--out", default="cachekit-demo", help="output folder (default: %(default)s)")
    d.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default: %(default)s)")
    d.add_argument("--repeats", type=_positive_int, default=None,
                   help="alternating timed rounds (default: 9; policy: 5)")
    d.add_argument("--recipe", default=None, help="recipe name or path (default: the model's: digits or video)")
    d.set_defaults(func=_cmd_demo)

    e = sub.add_parser("eval", help="compare uncached vs cached outputs and speed; write a report",
                       description="Runs a model uncached and cached with identical seeds; reports speed "
                                   "(median of alternating repeats) and quality (PSNR, SSIM, LPIPS if available).")
    _model_args(e, out="cachekit-eval", repeats=3)
    e.add_argument("--episodes", type=_positive_int, default=50,
                   help="closed-loop episodes for --model policy (seeds from --seeds' first value; default: %(default)s)")
    add_config_args(e)
    e.set_defaults(func=_cmd_eval)

    s = sub.add_parser("sweep", help="grid over methods' settings; table and speed-vs-PSNR Pareto plot",
                       description="One shared uncached baseline against every setting of the grid. Grid: "
                                   "--method NAME --SETTING SPEC [--SETTING SPEC ...], repeatable per method; "
                                   "SPEC is lo:hi:n (n values), a,b,c, or one value. Example: --method "
                                   "easycache --threshold 0.02:0.2:8 --method fixed_interval --interval 2,3,4")
    _model_args(s, out="cachekit-sweep", repeats=2)
    s.set_defaults(func=_cmd_sweep)

    t = sub.add_parser("tune", help="fastest settings meeting a quality target, written as a recipe",
                       description=tune_doc,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _model_args(t, out="tuned.yaml", repeats=3, inputs=False)
    t.add_argument("--methods", default="easycache,fixed_interval,block_drift,ertacache",
                   help="methods to search, each with forecasting on and off where it applies; add lemica for "
                        "global schedules (the costliest calibration) (default: %(default)s)")
    t.add_argument("--target-psnr", type=float, help="minimum mean PSNR vs uncached, dB")
    t.add_argument("--max-ssim-drop", type=float, help="maximum 1 - mean SSIM vs uncached")
    for which in ("calib", "holdout"):
        t.add_argument(f"--{which}-prompts", help=f"{which} prompts file")
        t.add_argument(f"--{which}-labels", type=_int_list, help=f"{which} class labels")
    t.add_argument("--calib-seeds", type=_int_list, default=[0], help="calibration seeds (default: 0)")
    t.add_argument("--holdout-seeds", type=_int_list, default=[1], help="held-out seeds (default: 1); "
                   "held-out inputs default to the calibration inputs with these seeds")
    t.set_defaults(func=_cmd_tune)

    c = sub.add_parser("calibrate", help="BAC, ERTACache or LeMiCa: full-compute runs on calibration inputs, write a plan recipe",
                       description="Full-compute runs on calibration inputs record every sub-block unit's output "
                                   "(self-attention, cross-attention, FFN) at every step; the Adaptive Caching "
                                   "Scheduler picks --updates recompute steps per unit and Bubbling Union adds the "
                                   "later FFNs' steps to the --top-n most volatile units. Writes a BAC recipe.")
    _model_args(c, out="bac.yaml", repeats=None)
    c.add_argument("--method", choices=("bac", "ertacache", "lemica"), default="bac",
                   help="bac: per-unit plan; ertacache: static reuse set of the whole stack with fitted "
                        "per-step corrections; lemica: global schedule from final-output errors (default: %(default)s)")
    c.add_argument("--fraction", type=float, default=None,
                   help="ertacache / lemica: computed fraction of steps to plan for")
    c.add_argument("--max-error", type=float, default=None,
                   help="ertacache / lemica: instead of --fraction, the cheapest plan whose worst fitted (ertacache) "
                        "or edge (lemica: final-output mean absolute error) error stays under this")
    c.add_argument("--max-skip", type=_positive_int, default=6,
                   help="lemica: longest edge, in steps (default: %(default)s)")
    c.add_argument("--units", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="lemica: reuse sub-block units (true) or the block stack (false) (default: true)")
    c.add_argument("--forecast", choices=("none", "taylor", "foca"), default="taylor",
                   help="lemica: forecast on reuse steps (default: %(default)s)")
    c.add_argument("--refine", type=int, default=0,
                   help="lemica: sweeps of local search on the calibration runs, one computed step moved at a time "
                        "(default: %(default)s)")
    c.add_argument("--correction", choices=("linear", "scale", "none"), default="linear",
                   help="ertacache: fitted terms (default: %(default)s)")
    c.add_argument("--warmup", type=int, default=2, help="ertacache: first steps always computed (default: %(default)s)")
    c.add_argument("--updates", type=_positive_int, default=10, help="bac: recompute steps per unit, M (default: %(default)s)")
    c.add_argument("--top-n", type=int, default=4, help="units given Bubbling Union (default: %(default)s)")
    c.add_argument("--metric", choices=("cosine", "l1", "mse"), default="cosine", help="similarity (default: %(default)s)")
    c.add_argument("--episodes", type=_positive_int, default=5,
                   help="--model policy: closed-loop episodes per seed whose observations calibrate (default: %(default)s)")
    c.set_defaults(func=_cmd_calibrate)
    return ap


def _model_args(p: argparse.ArgumentParser, out: str, repeats: int | None, inputs: bool = True) -> None:
    """--model, inputs (unless the command has its own), and the run options shared by commands."""
    p.add_argument("--model", required=True,
                   help="reference model (digits, video, policy), a diffusers folder, a cached Hub id, or module:function")
    if inputs:
        p.add_argument("--prompts", help="prompts file, one per line")
        p.add_argument("--labels", type=_int_list, help="class labels, e.g. 0,1,2 (class-conditional models)")
        p.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default: 0)")
    p.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the model's)")
    p.add_argument("--batch-size", type=_positive_int, default=10, help="inputs per pipeline call (default: %(default)s)")
    if repeats is not None:
        p.add_argument("--repeats", type=_positive_int, default=repeats, help="timed repeats (default: %(default)s)")
    p.add_argument("--out", default=out, help="output (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _split_grids(argv: list[str]) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """For sweep: pull ``--method NAME --KEY SPEC ...`` groups out of argv."""
    known = {"--model", "--prompts", "--labels", "--seeds", "--steps", "--batch-size", "--repeats", "--out", "--quiet",
             "-h", "--help"}
    rest: list[str] = []
    grids: list = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        key = tok.split("=", 1)[0]
        if key == "--method":
            name = tok.split("=", 1)[1] if "=" in tok else (argv[i + 1] if i + 1 < len(argv) else "")
            grids.append((name, {}))
            i += 1 if "=" in tok else 2
        elif grids and tok.startswith("--") and key not in known:
            value = tok.split("=", 1)[1] if "=" in tok else (argv[i + 1] if i + 1 < len(argv) else "")
            grids[-1][1][key[2:].replace("-", "_")] = value
            i += 1 if "=" in tok else 2
        else:
            rest.append(tok)
            i += 1
    return rest, grids


def main(argv: Sequence[str] | None = None) -> int:
    from .adapters import UnsupportedModelError
    from .evaluation.workloads import WorkloadError

    argv = list(sys.argv[1:] if argv is None else argv)
    command_line = shlex.join(["cachekit", *argv])
    grids: list = []
    if argv[:1] == ["sweep"]:
        argv, grids = _split_grids(argv)
    args = build_parser().parse_args(argv)
    args.grids = grids
    args.command_line = command_line
    # Denormal floats slow CPU matmuls several-fold, mostly at late steps where updates are tiny:
    # an uncached run would pay for them at steps a cached run skips, inflating speedups beyond
    # 1 / computed fraction (seen on the digits DiT). This process only; reports record it.
    torch.set_flush_denormal(True)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ConfigError, WorkloadError, UnsupportedModelError) as e:
        print(f"cachekit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

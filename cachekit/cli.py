"""The ``cachekit`` command: demo, eval.

Every command has ``--help``; bad input exits with status 2 and one line on stderr naming it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

import yaml

from .config import CacheConfig, ConfigError, config_classes

EXIT_BAD_INPUT = 2


class CLIError(Exception):
    """Bad input on the command line: printed as one line, exit status 2."""


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
    from .evaluation import evaluate, load_workload, read_inputs

    workload = load_workload(args.model, args.steps)
    config = config_from_args(args, default_recipe=None if args.recipe or args.method else _recipe_for(workload))
    if args.prompts and args.labels:
        raise CLIError("give --prompts or --labels, not both")
    inputs = read_inputs(args.prompts) if args.prompts else args.labels or workload.default_inputs
    if not inputs:
        raise CLIError("no inputs: give --prompts FILE or --labels 0,1,...")
    rep = evaluate(workload, config, inputs, args.seeds, batch_size=args.batch_size, repeats=args.repeats,
                   out_dir=args.out, progress=not args.quiet)
    from .evaluation.report import markdown

    print(markdown(rep))
    print(f"wrote {args.out}/report.json, report.md and PNGs")
    return 0


def _recipe_for(workload: Any) -> str:
    from .adapters import find_model
    from .recipe import recipe_for_model

    return recipe_for_model(type(find_model(workload.target)[0]).__name__).path


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out=args.out, steps=args.steps, repeats=args.repeats, recipe=args.recipe)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="cachekit", description="Training-free caching for diffusion transformers.")
    sub = ap.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="uncached vs cached on the shipped digits DiT: speed, quality, plots",
                       description="Runs the shipped digits reference DiT uncached and with its recipe (same "
                                   "seeds, same process); prints a table and writes samples.png and plan.png.")
    d.add_argument("--out", default="cachekit-demo", help="output folder (default: %(default)s)")
    d.add_argument("--steps", type=_positive_int, default=50, help="sampling steps (default: %(default)s)")
    d.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats (default: %(default)s)")
    d.add_argument("--recipe", default="digits", help="recipe name or path (default: %(default)s)")
    d.set_defaults(func=_cmd_demo)

    e = sub.add_parser("eval", help="compare uncached vs cached outputs and speed; write a report",
                       description="Runs a model uncached and cached with identical seeds; reports speed "
                                   "(median of alternating repeats) and quality (PSNR, SSIM, LPIPS if available).")
    e.add_argument("--model", required=True,
                   help="reference model (digits), a diffusers folder, a cached Hub id, or module:function")
    add_config_args(e)
    e.add_argument("--prompts", help="prompts file, one per line")
    e.add_argument("--labels", type=_int_list, help="class labels, e.g. 0,1,2 (class-conditional models)")
    e.add_argument("--seeds", type=_int_list, default=[0], help="comma-separated seeds (default: 0)")
    e.add_argument("--steps", type=_positive_int, default=None, help="denoising steps (default: the model's)")
    e.add_argument("--batch-size", type=_positive_int, default=10, help="inputs per pipeline call (default: %(default)s)")
    e.add_argument("--repeats", type=_positive_int, default=3, help="timed repeats (default: %(default)s)")
    e.add_argument("--out", default="cachekit-eval", help="output folder (default: %(default)s)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_eval)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    from .adapters import UnsupportedModelError
    from .evaluation.workloads import WorkloadError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CLIError, ConfigError, WorkloadError, UnsupportedModelError) as e:
        print(f"cachekit {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

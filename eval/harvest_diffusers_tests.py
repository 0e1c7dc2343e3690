"""Harvest diffusers' own tiny transformer test configurations into one offline file.

diffusers' ``tests/models/transformers/test_models_*.py`` hold, per transformer class, a tiny
``init_dict`` and dummy inputs (``get_init_dict`` / ``get_dummy_inputs``, or the older
``prepare_init_args_and_inputs_for_common``). This script imports those test modules from a
diffusers checkout, calls them, and writes every distinct (class, config) with its inputs to
``tests/data/diffusers_configs.pt``, which ``tests/families/test_diffusers_zoo.py`` runs offline (the
diffusers wheel ships no tests). Nothing here runs a model.

    python eval/harvest_diffusers_tests.py --diffusers-repo /path/to/diffusers [--out tests/data/diffusers_configs.pt]

The checkout needs ``tests/`` (its own ``testing_utils`` are imported); the installed diffusers
provides the classes. Entries whose test cannot build with the installed diffusers are listed
with the reason and left out.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import inspect
import os
import subprocess
import sys

import torch


def harvest(repo: str) -> tuple[dict, list[str]]:
    sys.path.insert(0, repo)
    entries: dict[str, dict] = {}
    skipped: list[str] = []
    for path in sorted(glob.glob(os.path.join(repo, "tests/models/transformers/test_models_*.py"))):
        modname = "tests.models.transformers." + os.path.basename(path)[:-3]
        try:
            module = importlib.import_module(modname)
        except Exception as e:   # a test module that needs what is not installed
            skipped.append(f"{os.path.basename(path)}: import failed ({type(e).__name__}: {e})")
            continue
        seen: set = set()
        for name, cls in vars(module).items():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            inst = cls.__new__(cls)
            try:
                if hasattr(cls, "get_init_dict") and hasattr(cls, "get_dummy_inputs"):
                    model_class = inst.model_class
                    init, inputs = inst.get_init_dict(), inst.get_dummy_inputs()
                elif hasattr(cls, "prepare_init_args_and_inputs_for_common"):
                    model_class = cls.model_class
                    init, inputs = inst.prepare_init_args_and_inputs_for_common()
                else:
                    continue
            except Exception as e:
                skipped.append(f"{os.path.basename(path)}::{name}: {type(e).__name__}: {str(e)[:120]}")
                continue
            key = (model_class.__name__, repr(sorted(init.items())))
            if key in seen:
                continue
            seen.add(key)
            n = sum(1 for e in entries.values() if e["class"].endswith("." + model_class.__name__))
            label = model_class.__name__ if n == 0 else f"{model_class.__name__}#{name.replace('TesterConfig', '')}"
            entries[label] = {
                "class": f"{model_class.__module__}.{model_class.__qualname__}",
                "init": dict(init),
                "inputs": dict(inputs),
                "source": f"{os.path.relpath(path, repo)}::{name}",
            }
    return entries, skipped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diffusers-repo", required=True)
    ap.add_argument("--commit", help="the checkout's commit, when it is not a git work tree")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "diffusers_configs.pt"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    entries, skipped = harvest(os.path.abspath(args.diffusers_repo))
    commit = args.commit
    if commit is None:
        try:
            commit = subprocess.run(["git", "-C", args.diffusers_repo, "rev-parse", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    import diffusers

    torch.save({"diffusers_tests_commit": commit, "diffusers_version": diffusers.__version__, "entries": entries,
                "skipped": skipped}, args.out)
    print(f"{len(entries)} configurations of {len({e['class'] for e in entries.values()})} classes -> {args.out}")
    for s in skipped:
        print("skipped:", s)


if __name__ == "__main__":
    main()

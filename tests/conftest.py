import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tests' own helper modules (tests/helpers/: tiny pipelines, toy models, workers), imported by
# bare name from every test folder (``from tiny_pipelines import build``); kept first, as they were
# when they sat beside the tests.
_HELPERS = pathlib.Path(__file__).resolve().parent / "helpers"
if str(_HELPERS) not in sys.path:
    sys.path.insert(0, str(_HELPERS))

# Script folders outside the package, importable by tests as the scripts import them: the reference
# models' training / evaluation scripts (<repo>/reference/*.py: ``from train_video import
# digit_bank``) and the benchmarks' anchor adapters (<repo>/eval/anchors: ``import anchors``).
_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _folder in (_ROOT / "reference", _ROOT / "eval"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Script folders outside the package, importable by tests as the scripts import them: the reference
# models' training / evaluation scripts (<repo>/reference/*.py: ``from train_video import
# digit_bank``) and the benchmarks' anchor adapters (<repo>/eval/anchors: ``import anchors``).
_ROOT = pathlib.Path(__file__).resolve().parents[1]
for _folder in (_ROOT / "reference", _ROOT / "eval"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

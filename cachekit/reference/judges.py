"""Moved to :mod:`cachekit.evaluation.judges` (scoring a reference model's outputs is evaluation, not loading it).

This old path stays importable for code written against it: it is the same module object, so its
private names and monkeypatching behave as before.
"""

import sys

from ..evaluation import judges as _moved

sys.modules[__name__] = _moved

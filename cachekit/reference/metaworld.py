"""Moved to :mod:`cachekit.evaluation.tasks.metaworld` (a task environment is evaluation, not a model loader).

This old path stays importable for code written against it: it is the same module object, so its
private names and monkeypatching behave as before.
"""

import sys

from ..evaluation.tasks import metaworld as _moved

sys.modules[__name__] = _moved

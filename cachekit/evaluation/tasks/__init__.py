"""Closed-loop tasks the reference diffusion policies are judged on (environments and episode loops).

* :mod:`~cachekit.evaluation.tasks.pointmass` -- the point-mass task of the shipped policy (numpy
  only) and gym-pusht, with the batched closed-loop evaluation and its summary statistics;
* :mod:`~cachekit.evaluation.tasks.metaworld` -- Meta-World v3 tasks (the ``[metaworld]`` extra):
  seeded scenes, a vector of envs stepped together, scripted-expert demonstrations.

Both were ``cachekit.reference.pointmass`` / ``cachekit.reference.metaworld``; those paths still
import (as these same modules). Nothing here is imported by ``import cachekit``.
"""

"""The public verbs: apply, remove, stats, reset, record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from . import methods as _methods  # noqa: F401  (registers the built-in methods)
from torch import nn

from .adapters import (ModelLayout, NeedsDiscovery, UnsupportedModelError, denoiser_span, find_denoisers, find_model,
                       find_units, model_fingerprint, resolve, segment_blocks)
from .config import CacheConfig, ConfigError, method_for
from .fitting import fallback_chain
from .methods.base import CacheMethod
from .recipe import load_recipe, recipe_for_model
from .recording import DEFAULT_FEATURES, LEVELS, Recorder, Recording
from .runtime.compile import compile_options
from .runtime.tap import ForwardTap
from .runtime.deferred import Deferred
from .runtime.denoisers import Denoisers
from .runtime.guards import _human
from .runtime.session import SESSION_ATTR, Session
from .runtime.history import HistoryStorage
from .runtime.stats import CacheStats
from .errors import AlreadyAppliedError, NotAppliedError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = ["apply", "remove", "stats", "reset", "record", "AlreadyAppliedError", "NotAppliedError", "find_model"]


def _session(obj: Any) -> Session | None:
    return vars(obj).get(SESSION_ATTR) if hasattr(obj, "__dict__") else None


def _refuse_applied(obj: Any) -> None:
    if _session(obj) is not None:
        raise AlreadyAppliedError(f"cachekit.apply: {type(obj).__name__} already has cachekit hooks; "
                                  f"call cachekit.remove first")


def _require_session(target: Any, verb: str) -> Session:
    session = _session(target)
    if session is None:
        raise NotAppliedError(f"cachekit.{verb}: {type(target).__name__} has no cachekit hooks "
                              f"(call cachekit.apply first)")
    return session


#: ``quality=`` -> the packaged calibration-free preset (recipes/<name>.yaml; figures in docs/usage.md and docs/default.md)
QUALITY = {"fast": "fast", "balanced": "default", "high": "high"}


def _resolve_config(config: CacheConfig | str | Path | None, model_class: str, quality: str | None = None) -> CacheConfig:
    if quality is not None:
        return load_recipe(QUALITY[quality]).config
    if config is None:
        return recipe_for_model(model_class).config
    if isinstance(config, CacheConfig):
        return config
    if isinstance(config, (str, Path)):
        return load_recipe(config).config
    raise ConfigError(f"config must be a CacheConfig, a recipe name or a recipe path, "
                      f"got {type(config).__name__}")


def _install(target: Any, method: CacheMethod | Callable[[Any], CacheMethod], layout: ModelLayout | None,
             compile_opts: dict | None, component: str | None = None, **session_options: Any) -> Session | Deferred:
    """What ``apply`` and ``record`` share: check, resolve, bind the method, hook. ``method`` may be
    a factory of the model class name (so a recipe is only looked up once the model is known).
    ``component``: one denoiser of a pipeline that has several (``Denoisers``); its session is
    set on the model only, and follows the pipeline's scheduler."""
    model, _ = find_model(target, component)
    # where the session is set: the model alone for one of several denoisers (the pipeline holds
    # their ``Denoisers``, checked there), else the model and the target
    owners = [model] if target is model or component is not None else [model, target]
    for obj in owners[::-1]:   # the target first, as the error names it
        _refuse_applied(obj)
    if getattr(model, "is_cache_enabled", False) is True:  # diffusers' CacheMixin property
        raise AlreadyAppliedError(f"cachekit.apply: diffusers' own cache is enabled on {type(model).__name__}; "
                                  f"call .disable_cache() first (two caches would skip each other's blocks)")
    if not isinstance(method, CacheMethod):
        method = method(type(model).__name__)   # a bad config or recipe is refused here, before any hook
    try:
        resolved = resolve(target, layout, component)
    except NeedsDiscovery:
        if not any(isinstance(m, (nn.ModuleList, nn.Sequential)) for m in model.modules()):
            raise UnsupportedModelError(
                f"cachekit.apply: {type(model).__name__} holds no nn.ModuleList or nn.Sequential, so no list of "
                f"transformer blocks to cache; pass layout=cachekit.ModelLayout(block_lists=(...))") from None
        # No layout known for this class: found from the model's first call (runtime/deferred.py).
        pipe_or_target = target if target is not model else None
        scheduler = getattr(pipe_or_target, "scheduler", None) if pipe_or_target is not None else None
        deferred = Deferred(model, owners, SESSION_ATTR,
                            lambda found: _install(target, method, found, compile_opts, component, **session_options),
                            scheduler, session_options.get("tap"))
        deferred.install()
        return deferred
    for block in resolved.blocks:
        if getattr(vars(block.module).get("forward"), "__cachekit__", False):
            raise AlreadyAppliedError(f"cachekit.apply: block {block.name} already has cachekit hooks")
    blocks = list(resolved.blocks) if method.granularity == "unit" else list(segment_blocks(resolved))
    units = find_units(blocks) if method.granularity == "unit" else None
    method.bind(model, tuple(u.name for u in units) if units else tuple(b.name for b in blocks))
    span = denoiser_span(target, component) if component is not None else None
    session = Session(method, model, blocks, resolved.layout.timestep_arg, resolved.scheduler, units,
                      pipeline=resolved.pipeline, span=span, **session_options)
    session.install(owners, compile_opts)
    return session


def _install_denoisers(pipe: Any, names: list[str], config: Any, quality: str | None, layout: ModelLayout | None,
                       compile_opts: dict | None, **session_options: Any) -> Denoisers:
    """Every denoiser of a pipeline that has several, each with its own session and config."""
    _refuse_applied(pipe)
    configs = config if isinstance(config, dict) else {n: config for n in names}
    unknown = sorted(set(configs) - set(names))
    if unknown:
        raise ConfigError(f"cachekit.apply: config names {', '.join(unknown)}, not denoisers of "
                          f"{type(pipe).__name__} ({', '.join(names)})")
    for n in names:   # a bad config is refused before any hook
        _method_factory(configs.get(n), quality)(type(getattr(pipe, n)).__name__)
    denoisers = Denoisers(pipe, SESSION_ATTR)
    denoisers.install({n: (lambda n=n: _install_any(pipe, configs.get(n), quality, layout, compile_opts, n,
                                                    **session_options))
                       for n in names})
    return denoisers


def _method_factory(config: Any, quality: str | None) -> Callable[[str], CacheMethod]:
    return lambda model_class: method_for(_resolve_config(config, model_class, quality))


def _install_any(target: Any, config: Any, quality: str | None, layout: ModelLayout | None,
                 compile_opts: dict | None, component: str | None = None, **options: Any) -> Session | Deferred:
    """An explicit config as given; the default (no config, or a quality preset) fitted to memory."""
    if config is not None and quality is None:
        return _install(target, _method_factory(config, quality), layout, compile_opts, component, **options)
    model, _ = find_model(target, component)
    chain = fallback_chain(_resolve_config(config, type(model).__name__, quality), options.pop("history"))

    found = [layout]   # a layout discovery finds at the first call serves the cheaper configs too

    def install(i: int, note: str | None) -> Session | Deferred:
        def finish(session: Session) -> Session:
            if i + 1 < len(chain):
                session.refit = lambda old: refit(i, old)
            if i:
                session.rebest = rebest
            session.fit_note = note
            return session

        session = _install(target, method_for(chain[i][1]), found[0], compile_opts, component,
                           history=chain[i][2], **options)
        if isinstance(session, Deferred):
            inner = session._install

            def discovered(new_layout: ModelLayout) -> Session:
                found[0] = new_layout
                return finish(inner(new_layout))

            session._install = discovered
            return session
        return finish(session)

    def refit(i: int, old: Session) -> Session | Deferred:
        needed, over = old.budget.refused
        old.uninstall()
        note = (f"{chain[i + 1][0]} (the default, {chain[0][0]}, would cache about {_human(needed)}, over {over}; "
                f"{chain[i][0]} did not fit either)" if i else
                f"{chain[1][0]} (the default, {chain[0][0]}, would cache about {_human(needed)}, over {over})")
        return install(i + 1, note)   # the session warns once, with the one that ran

    def rebest(old: Session) -> Session | Deferred:
        old.uninstall()
        return install(0, None)

    return install(0, None)


def apply(target: Any, config: CacheConfig | str | Path | dict | None = None, *, quality: str | None = None,
          layout: ModelLayout | None = None, compile: bool | dict = False, max_cache_bytes: int | None = None,
          keep_cache: bool = False, check_ranks: bool | None = None,
          history: HistoryStorage | str | None = None, tap: ForwardTap | None = None) -> Any:
    """Install caching hooks on ``target``'s transformer blocks; returns ``target``.

    Args:
        target: a diffusers pipeline, a diffusers transformer model, or any ``nn.Module`` holding a
            list of transformer blocks.
        config: a config object (``EasyCacheConfig(...)``), a packaged recipe name (``"wan"``), a
            path to a recipe YAML, or None for the recipe registered for this model class (else
            the default: the "balanced" preset). A pipeline with several denoisers (Wan 2.2's
            ``transformer`` and ``transformer_2``) gets one session per denoiser, each with this
            config; or give a dict ``{"transformer": ..., "transformer_2": ...}`` (a name left out
            gets the default); each denoiser counts steps from its own first step of a generation.
        quality: instead of ``config``, one of the calibration-free presets: "fast", "balanced"
            (the default), "high" (sub-block units with a Taylor forecast every 4th / 3rd / 2nd
            step; measured speed and PSNR in docs/usage.md).
        layout: where the blocks are, for models cachekit does not know (or use
            ``cachekit.register_layout`` once for the class).
        compile: True to ``torch.compile`` each block's original forward (each sub-block unit's for
            BAC), ``fullgraph=True`` where dynamo takes it whole; the caching decisions stay eager,
            so steps and generations cause no recompiles. A dict passes ``torch.compile`` options
            (``mode``, ``backend``, ``dynamic``, ``fullgraph``, ``options``). A block compiled with
            ``.compile()`` (diffusers' ``compile_repeated_blocks``) is compiled by cachekit instead
            until ``remove``. The model outside the blocks stays eager. CUDA-graph modes
            ("reduce-overhead", "max-autotune") are refused: a graph's outputs are overwritten at
            its next replay, and cachekit keeps outputs across steps.
        max_cache_bytes: refuse (``CacheBudgetError``, one line with the estimate) a generation
            whose cache would hold more: projected from the first cached tensor of each CFG branch,
            before it is kept. Without it, a CUDA generation whose cached history alone would not
            fit in what the device can still give is refused the same way (the line names the
            cheaper options); ``cachekit.estimate_cache_bytes`` tells the size before a run. The
            default (no config, or a ``quality`` preset) is refused only when even plain stack-level
            reuse would not fit: it runs the best
            configuration of ``cachekit.fitting.fallback_chain`` that fits, warns once, and records
            it in ``stats().chosen``.
        keep_cache: keep a pipeline generation's cached tensors after its last step (default: freed
            when the scheduler's last step returns; ``stats`` reports what they held).
        check_ranks: under context parallelism, all-gather every decision and raise
            ``RankMismatchError`` (naming the step and the ranks) where ranks differ, instead of
            hanging in the model's collectives: for debugging, one collective per decision. None:
            the environment variable ``CACHEKIT_CHECK_RANKS=1`` (read here, once).
        history: where a forecast's cached tensors older than the newest are kept (they are read
            only on reuse steps that forecast): None / "device" (default, beside the newest),
            "host" (CPU memory, pinned on CUDA, copied asynchronously), "bf16" / "fp16" (stored in
            that precision, brought back to the stream's dtype when combined), "host+bf16", or a
            ``cachekit.HistoryStorage``. Plain reuse keeps no older entries and is unaffected.
        tap: for calibration (``cachekit.calibration``): a ``ForwardTap`` the model's hook consults
            first at every call, to count, record, or replay recorded outputs for the first calls
            (LeMiCa's shared prefixes). One model only, not a pipeline with several denoisers.

    Nothing is changed when this raises. Hooks live on the instances only.

    Example:
        >>> import cachekit
        >>> from cachekit.reference.digits import load_digits_pipeline
        >>> pipe = cachekit.apply(load_digits_pipeline())          # the shipped digits DiT
        >>> images = pipe([3, 7], num_inference_steps=10, output_type="pt").images
        >>> cachekit.stats(pipe).computed_fraction
        0.5
        >>> pipe = cachekit.remove(pipe)
        >>> "forward" in vars(pipe.transformer)
        False
    """
    compile_opts = compile_options(compile)
    if max_cache_bytes is not None and (isinstance(max_cache_bytes, bool) or not isinstance(max_cache_bytes, int)
                                        or max_cache_bytes < 1):
        raise ValueError(f"cachekit.apply: max_cache_bytes must be an int >= 1, got {max_cache_bytes!r}")
    if quality is not None and (not isinstance(quality, str) or quality not in QUALITY or config is not None):
        raise ConfigError(f"cachekit.apply: quality must be one of {', '.join(QUALITY)}, got {quality!r}"
                          if not isinstance(quality, str) or quality not in QUALITY else
                          "cachekit.apply: give a config or a quality, not both")
    if check_ranks is None:
        check_ranks = os.environ.get("CACHEKIT_CHECK_RANKS", "") == "1"
    storage = HistoryStorage.parse(history)
    if tap is not None and not isinstance(tap, ForwardTap):
        raise TypeError(f"cachekit.apply: tap must be a cachekit.runtime.tap.ForwardTap, got {type(tap).__name__}")
    options = dict(keep_cache=bool(keep_cache), max_cache_bytes=max_cache_bytes, check_ranks=bool(check_ranks),
                   history=storage, tap=tap)
    denoisers = [name for name, _ in find_denoisers(target)]
    if len(denoisers) > 1 and tap is not None:
        raise ConfigError(f"cachekit.apply: a tap follows one model; {type(target).__name__} has the denoisers "
                          f"{', '.join(denoisers)}")
    if len(denoisers) > 1:
        _install_denoisers(target, denoisers, config, quality, layout, compile_opts, **options)
        return target
    if isinstance(config, dict):
        raise ConfigError(f"cachekit.apply: a config per denoiser needs a pipeline with several denoisers; "
                          f"{type(target).__name__} has {', '.join(denoisers) or 'one model'}")
    _install_any(target, config, quality, layout, compile_opts, **options)
    return target


def remove(target: Any) -> Any:
    """Undo ``apply`` exactly: original ``forward`` objects back, no attribute left behind;
    returns ``target``.

    Args:
        target: what ``apply`` was given.

    Example: see ``apply``.
    """
    _require_session(target, "remove").uninstall()
    return target


def stats(target: Any) -> CacheStats:
    """What the last generation did: computed fraction and the (calls x blocks) recompute plan.

    Args:
        target: what ``apply`` was given.

    Example: see ``apply``.
    """
    return _require_session(target, "stats").stats()


def reset(target: Any, num_steps: int | None = None) -> None:
    """Start a new generation now (bare modules; pipelines do this on every call by themselves).

    Args:
        target: what ``apply`` was given (a bare module).
        num_steps: steps of the coming generation, so methods can always compute the last one;
            a generation also ends by itself after this many steps.

    Example:
        >>> import torch, cachekit
        >>> layer = torch.nn.TransformerEncoderLayer(16, 2, batch_first=True)
        >>> model = cachekit.apply(torch.nn.TransformerEncoder(layer, num_layers=2), cachekit.FixedIntervalConfig())
        >>> cachekit.reset(model, num_steps=4)    # no timestep argument: each call is one step
        >>> outs = [model(torch.randn(1, 5, 16)) for _ in range(4)]
        >>> cachekit.stats(model).plan[:, 0].tolist()    # step 2 reused, the last step computed
        [True, True, False, True]
    """
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"cachekit.reset: num_steps must be an int >= 1, got {num_steps!r}")
    _require_session(target, "reset").reset(num_steps)


def _share_rank0(recorder: Recorder, model: Any) -> None:
    """Under context parallelism every rank records its own shard: rank 0's recording is sent to
    all, so every rank makes the same plan (different plans would hang in the model's collectives)."""
    from .runtime.parallel import context_parallel_group

    group = context_parallel_group(model)
    if group is None:
        return
    import torch.distributed as dist

    box = [(recorder.runs, recorder.leaders)]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    recorder.runs, recorder.leaders = box[0]


def record(target: Any, runs: Iterable[Callable[[], Any]], *, level: str = "units",
           max_features: int | None = None, seed: int = 0, layout: ModelLayout | None = None,
           progress: Any = None, denoiser: str | None = None) -> Recording:
    """Run each callable with full compute and record what the blocks produced, for offline plans.

    The stack's residual (``level="stack"``) or each sub-block unit's output (``"units"``) is kept at
    every step, branch and generation as a fixed random subset of elements; the outputs are the
    uncached ones, bit for bit. Under context parallelism every rank returns rank 0's recording.
    Planners (``cachekit.planning``) take the result; ``cachekit.calibration`` runs both in one call.

    Args:
        target: as for ``apply``; it must not have cachekit applied (the hooks are removed after).
        runs: callables, each running one or more generations (e.g. one pipeline call).
        level: "units" or "stack".
        max_features: elements recorded per tensor (None: 4096 per unit, 16384 for the stack).
        seed: seed of the element subsets.
        layout: where the blocks are, as for ``apply``.
        progress: an object with ``update(1)`` called after each run (a tqdm bar).
        denoiser: for a pipeline with several denoisers (Wan 2.2), the one to record
            ("transformer" or "transformer_2"); its steps are counted from its own first step, so
            a plan made from the recording is given to that denoiser (``apply(pipe, {name: plan})``).

    Example:
        >>> import cachekit
        >>> from cachekit.reference.digits import load_digits_pipeline
        >>> pipe = load_digits_pipeline()
        >>> rec = cachekit.record(pipe, [lambda: pipe([3, 7], num_inference_steps=4, output_type="pt")])
        >>> rec.level, rec.num_steps, len(rec.columns), rec.columns[:2]
        ('units', 4, 16, ('transformer_blocks.0.self_attn', 'transformer_blocks.0.ffn'))
    """
    names = [name for name, _ in find_denoisers(target)]
    if denoiser is not None and denoiser not in names:
        raise ValueError(f"cachekit.record: denoiser {denoiser!r} is not one of {type(target).__name__}'s "
                         f"({', '.join(names) or 'none: pass the pipeline'})")
    if denoiser is None and len(names) > 1:
        raise ValueError(f"cachekit.record: {type(target).__name__} runs {len(names)} denoisers ({', '.join(names)}); "
                         f"record one at a time with denoiser=")
    if level not in LEVELS:
        raise ValueError(f"cachekit.record: level must be one of {', '.join(LEVELS)}, got {level!r}")
    n = DEFAULT_FEATURES[level] if max_features is None else max_features
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"cachekit.record: max_features must be an int >= 1, got {max_features!r}")
    recorder = Recorder(level, n, seed)
    session = _install(target, recorder, layout, None, denoiser if len(names) > 1 else None)
    try:
        for run in runs:
            recorder.keep_output(run())
            if progress is not None:
                progress.update(1)
    finally:
        session = session.current()
        session.uninstall()
    if isinstance(session, Deferred):
        raise ValueError("cachekit.record: nothing was recorded: the runs never called the model")
    _share_rank0(recorder, session.root)
    if not recorder.runs:
        raise ValueError("cachekit.record: nothing was recorded: the runs never called the model")
    if level == "units":
        units = session.path.units
        columns, kinds, layers = tuple(u.name for u in units), tuple(u.kind for u in units), tuple(u.layer for u in units)
    else:
        columns, kinds, layers = ("stack",), (), ()
    return Recording(level, columns, kinds, layers, recorder.runs, recorder.leaders, model_fingerprint(session.root),
                     recorder.channels, recorder.outputs)

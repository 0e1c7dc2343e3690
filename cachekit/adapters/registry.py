"""``cachekit.register_layout``: where the blocks of a model class are, registered once per process.

The registry starts as the built-in layouts (``known.py``). A registration is keyed by the exact
class (module + qualname): subclasses are never matched by accident. It is process-wide by design,
like torchao's config handlers: a layout describes a class, not an instance. ``apply(...,
layout=...)`` describes one call without registering anything.
"""

from __future__ import annotations

from typing import Any

from .base import ModelLayout, qualname
from .diffusers_layouts import LAYOUTS as _MORE
from .known import LAYOUTS as _FIRST

LAYOUTS: dict[str, ModelLayout] = {**_FIRST, **_MORE}   # the built-ins
_layouts: dict[str, ModelLayout] = dict(LAYOUTS)


def _key(model_class: Any) -> str:
    if isinstance(model_class, str):
        if "." not in model_class:
            raise ValueError(f"register_layout: {model_class!r} is not a 'module.ClassName' path")
        return model_class
    if not isinstance(model_class, type):
        raise TypeError(f"register_layout: expected a model class or its 'module.ClassName' path, "
                        f"got {type(model_class).__name__}")
    return qualname(model_class)


def register_layout(model_class: type | str, layout: ModelLayout, *, replace: bool = False) -> None:
    """Tell cachekit where the blocks of ``model_class`` are, so ``cachekit.apply(model)`` finds them.

    Args:
        model_class: the model class (exact; subclasses need their own registration), or its
            "module.ClassName" path (so the class need not be imported).
        layout: block lists, their streams, the timestep argument and, for unit-level methods,
            their sub-block units (``ModelLayout``, ``BlockIO``, ``BlockUnits``).
        replace: allow replacing another layout registered for the same class (built-ins included).

    Raises ValueError when another layout is registered for the class and ``replace`` is False.

    Example:
        >>> import torch, cachekit
        >>> class Net(torch.nn.Module):      # blocks are nn.Linear, whose stream argument is "input"
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layers = torch.nn.ModuleList(torch.nn.Linear(8, 8) for _ in range(3))
        ...     def forward(self, x, t):
        ...         for layer in self.layers:
        ...             x = layer(x)
        ...         return x
        >>> layout = cachekit.ModelLayout(("layers",), cachekit.BlockIO(("input",)), timestep_arg="t")
        >>> cachekit.register_layout(Net, layout)
        >>> net = cachekit.apply(Net(), cachekit.FixedIntervalConfig())
        >>> cachekit.stats(net).block_names      # known at once, before any call
        ('layers.0', 'layers.1', 'layers.2')
        >>> net = cachekit.remove(net)
        >>> cachekit.unregister_layout(Net)
    """
    key = _key(model_class)
    if not isinstance(layout, ModelLayout):
        raise TypeError(f"register_layout: layout must be a cachekit.ModelLayout, got {type(layout).__name__}")
    if key in _layouts and _layouts[key] != layout and not replace:
        raise ValueError(f"register_layout: {key} already has a layout ({_layouts[key].block_lists}); "
                         f"pass replace=True to replace it")
    _layouts[key] = layout


def unregister_layout(model_class: type | str) -> None:
    """Undo ``register_layout``: the built-in layout comes back where there was one.

    Args:
        model_class: the class, or its "module.ClassName" path, as given to ``register_layout``.

    Example:
        >>> import cachekit
        >>> cachekit.register_layout("mypkg.Net", cachekit.ModelLayout(("blocks",)))
        >>> cachekit.register_layout("mypkg.Net", cachekit.ModelLayout(("layers",)))
        Traceback (most recent call last):
        ...
        ValueError: register_layout: mypkg.Net already has a layout (('blocks',)); pass replace=True to replace it
        >>> cachekit.unregister_layout("mypkg.Net")
        >>> cachekit.register_layout("mypkg.Net", cachekit.ModelLayout(("layers",)))   # free again
        >>> cachekit.unregister_layout("mypkg.Net")
    """
    key = _key(model_class)
    if key in LAYOUTS:
        _layouts[key] = LAYOUTS[key]
    else:
        _layouts.pop(key, None)


def layout_for(model: Any) -> ModelLayout | None:
    """The registered layout of this model's exact class, or None."""
    return _layouts.get(qualname(model))


def is_registered(model: Any) -> bool:
    return qualname(model) in _layouts

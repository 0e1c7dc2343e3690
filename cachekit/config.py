"""Config dataclasses and their validation.

Every method has one frozen config dataclass. Fields carry their own bounds in ``metadata`` so one
validator serves every config, from Python and from YAML alike, and errors name the field and the
allowed values. Method handlers are registered by config class (``register_method``), so adding a
method never touches the dispatcher in ``api.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar
from .errors import ConfigError  # noqa: F401 - defined in errors.py, importable here as before

__all__ = ["CacheConfig", "ConfigError", "spec", "register_method", "method_for", "config_classes"]


def spec(default: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
         choices: tuple | None = None, help: str = "") -> Any:
    """A dataclass field with bounds: ``lo``/``hi`` inclusive unless ``lo_open``; or ``choices``."""
    meta = {"lo": lo, "hi": hi, "lo_open": lo_open, "choices": choices, "help": help}
    if isinstance(default, (list, dict, set)):
        raise TypeError("mutable defaults are not allowed in frozen configs; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def _allowed(f: dataclasses.Field) -> str:
    m, kind = f.metadata, _kind(f)
    if m.get("choices"):
        return "one of " + ", ".join(map(str, m["choices"]))
    parts = [kind]
    if m.get("lo") is not None:
        parts.append(("> " if m.get("lo_open") else ">= ") + str(m["lo"]))
    if m.get("hi") is not None:
        parts.append("<= " + str(m["hi"]))
    return " ".join(parts)


def _kind(f: dataclasses.Field) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.replace(" ", "")


def _check_value(cls_name: str, f: dataclasses.Field, value: Any) -> Any:
    """Return the value, converted where lossless (int -> float), or raise ConfigError."""
    kind, m = _kind(f), f.metadata
    where = f"{cls_name}.{f.name}"
    bad = ConfigError(f"{where} must be {_allowed(f)}, got {value!r}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            raise bad
    if m.get("choices") and value not in m["choices"]:
        raise bad
    if m.get("lo") is not None and (value <= m["lo"] if m.get("lo_open") else value < m["lo"]):
        raise bad
    if m.get("hi") is not None and value > m["hi"]:
        raise bad
    return value


#: What a reuse step puts in place of a cached tensor (rules in ``cachekit.methods.forecast``).
FORECASTS = ("none", "taylor", "foca")
_FORECAST_DEFAULTS = {"forecast": "none", "forecast_order": 1}


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """Base of all method configs. Subclasses are frozen dataclasses whose fields use ``spec``.

    Every method's config takes these arguments besides its own.

    Args:
        forecast: "none" reuses the cached tensor as it is; "taylor" extrapolates it from the last
            ``forecast_order`` + 1 computed steps (polynomial in step index); "foca" uses a
            BDF2 predictor with a Heun-style correction over the last three computed steps.
            Memory: one extra cached tensor per unit and CFG branch per extra point.
        forecast_order: Taylor order k (0 = plain reuse, bit for bit); ignored by "foca".

    Example:
        >>> import cachekit
        >>> cfg = cachekit.FixedIntervalConfig(interval=3, forecast="taylor", forecast_order=2)
        >>> isinstance(cfg, cachekit.CacheConfig), cfg.forecast_settings()    # what differs from plain reuse
        (True, {'forecast': 'taylor', 'forecast_order': 2})
        >>> cachekit.EasyCacheConfig(forecast="linear")
        Traceback (most recent call last):
        ...
        cachekit.errors.ConfigError: EasyCacheConfig.forecast must be one of none, taylor, foca, got 'linear'
    """

    method: ClassVar[str] = ""
    forecast: str = spec("none", choices=FORECASTS, help="reuse as is, or forecast the cached tensor")
    forecast_order: int = spec(1, lo=0, hi=3, help="Taylor order of the forecast")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _check_value(type(self).__name__, f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Cross-field checks; raise ConfigError. Per-field bounds are checked before this."""

    def to_dict(self) -> dict[str, Any]:
        """Method and settings as written in recipes; the shared forecast settings only when they
        differ from plain reuse (older recipes stay as they were)."""
        settings = dataclasses.asdict(self)
        for key, default in _FORECAST_DEFAULTS.items():
            if settings.get(key) == default:
                settings.pop(key)
        settings = {k: settings[k] for k in [*[k for k in settings if k not in _FORECAST_DEFAULTS],
                                             *[k for k in settings if k in _FORECAST_DEFAULTS]]}
        return {"method": self.method, "settings": settings}

    def forecast_settings(self) -> dict[str, Any]:
        """The shared forecast settings that differ from plain reuse (for custom ``to_dict``)."""
        return {k: getattr(self, k) for k, d in _FORECAST_DEFAULTS.items() if getattr(self, k) != d}

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        names = [f.name for f in dataclasses.fields(cls)]
        return tuple([n for n in names if n not in _FORECAST_DEFAULTS] + [n for n in names if n in _FORECAST_DEFAULTS])

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> "CacheConfig":
        unknown = sorted(set(settings) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r} for method {cls.method!r}; "
                              f"allowed: {', '.join(cls.field_names())}")
        return cls(**settings)


# config class -> factory(config) -> method object. Filled once, at import of cachekit.methods.
_HANDLERS: dict[type, Callable[[CacheConfig], Any]] = {}


def register_method(config_cls: type) -> Callable:
    """Class decorator: ``@register_method(EasyCacheConfig) class EasyCache: ...``."""
    if not config_cls.method:
        raise TypeError(f"{config_cls.__name__} must set the class attribute 'method'")

    def deco(handler: Callable) -> Callable:
        _HANDLERS[config_cls] = handler
        return handler

    return deco


def method_for(config: CacheConfig) -> Any:
    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"no cache method is registered for {type(config).__name__}; "
                          f"known: {', '.join(c.__name__ for c in _HANDLERS)}")
    return handler(config)


def config_classes() -> dict[str, type]:
    """Method name (as written in recipes) -> config class; internal methods ("_name") excluded."""
    return {c.method: c for c in _HANDLERS if not c.method.startswith("_")}

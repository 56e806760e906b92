"""Registry of benchmarked methods.

``get_method(name, **options)`` returns a ready :class:`Method`. Methods register themselves with
the ``@register(name)`` decorator when their module is imported; :data:`METHOD_MODULES` names the
module that defines each built-in method so it is imported only when asked for (``pann`` and
``unet3d`` need torch through ``models``; ``classical`` does not). Third-party methods
can register through the ``aet_suite.methods`` entry-point group (``name = "pkg.module:Class"``;
``examples/aet-method-example`` in the repository is a complete plugin package). Predictions made
elsewhere are scored through the ``files`` method (:mod:`benchmark.methods.files`).
Every method ``X`` also exists as ``X+refine`` (:mod:`benchmark.methods.refine`): its atoms refined
against the measured tilt series.
"""

from __future__ import annotations

import importlib
import logging

from benchmark.methods.base import Method, Prediction

__all__ = ["Method", "Prediction", "register", "get_method", "available_methods", "METHOD_MODULES"]

logger = logging.getLogger(__name__)

# name -> "module" (whose import registers the name) or "module:Class".
METHOD_MODULES: dict[str, str] = {
    "classical": "benchmark.methods.classical",
    "unet3d": "benchmark.methods.unet3d",
    "pann": "benchmark.methods.pann",
    "torch": "benchmark.methods.torch_model",
    "files": "benchmark.methods.files",
}

#: Listed by :func:`available_methods`; any other ``"<name>+refine"`` resolves too.
REFINED_METHODS = ("classical+refine", "unet3d+refine", "pann+refine")

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""

    def decorator(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise ValueError(f"cls={cls!r}: expected a subclass of benchmark.methods.Method")
        previous = _REGISTRY.get(name)
        if previous is not None and previous is not cls:
            logger.warning(
                "method %r re-registered: %s replaces %s",
                name,
                cls.__qualname__,
                previous.__qualname__,
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    try:
        return {ep.name: ep.value for ep in entry_points(group="aet_suite.methods")}
    except Exception:  # broken metadata must not break the built-in methods
        logger.debug("could not read entry points", exc_info=True)
        return {}


def _load(name: str) -> type[Method]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    target = METHOD_MODULES.get(name) or _entry_points().get(name)
    if target is None and name.endswith("+refine") and name != "+refine":
        base = name[: -len("+refine")]
        base_cls = _load(base)  # fails with the base method's error if it is unknown
        from benchmark.methods.refine import refined_method

        return register(name)(refined_method(base, base_cls))
    if target is None:
        raise ValueError(f"method={name!r}: expected one of {available_methods()}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    if attribute:
        register(name)(getattr(module, attribute))
    if name not in _REGISTRY:
        raise ValueError(f"method={name!r}: module {module_name!r} did not register it")
    return _REGISTRY[name]


def get_method(name: str, **options) -> Method:
    """An instance of the method registered as ``name``, built with ``options``.

    Raises:
        ValueError: An option the method does not take (one line naming it and the method's
            options).
    """
    cls = _load(name)
    accepted = cls.accepted_options()
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"{unknown[0]}={options[unknown[0]]!r}: not an option of method {name!r} "
            f"(it takes: {', '.join(sorted(accepted)) or 'no options'})"
        )
    method = cls(**options)
    method.given_options = dict(options)  # as asked for, defaults left out (results records)
    return method


def available_methods() -> list[str]:
    """Names of all known methods (registered, built-in and entry points), sorted."""
    return sorted(
        set(_REGISTRY) | set(METHOD_MODULES) | set(REFINED_METHODS) | set(_entry_points())
    )

"""Find a pipeline's stage factory from its name: a bundled name or ``module:factory``."""

from __future__ import annotations

import importlib

from engine.errors import ConfigError
from engine.media.stage import Stage, StageFactory

__all__ = ["BUNDLED", "load_stage_factory"]

BUNDLED = {
    "echo": "pipelines.echo:create",
    "turn-echo": "pipelines.turn_echo:create",
    "openai-realtime": "pipelines.openai_realtime:create",
    "local": "pipelines.local:create",
    "llm": "pipelines.llm:create",
}
"""The pipelines that ship with the engine, by name."""


def load_stage_factory(spec: str) -> StageFactory:
    """Resolve ``spec`` (``echo``, ``turn-echo``, or ``package.module:factory``) to a factory.

    The factory is called once here as a check, so a broken pipeline fails at start-up, not on
    the first call.
    """
    target = BUNDLED.get(spec, spec)
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        names = ", ".join(sorted(BUNDLED))
        raise ConfigError(f"unknown pipeline {spec!r}: use one of {names} or module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"pipeline {spec!r}: cannot import {module_name!r}: {exc}") from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigError(f"pipeline {spec!r}: {module_name} has no callable {attribute!r}")
    probe = factory()
    if not isinstance(probe, Stage):
        raise ConfigError(f"pipeline {spec!r}: {attribute}() returned {probe!r}, not a Stage")
    return factory  # type: ignore[no-any-return]

"""Segmentation and regression engines behind one small registry.

An engine turns a `Volume` into a `LabelMap` (or estimates) and describes itself with an
`Algorithm` (both in `myonode.core.types`). A spec is "name" or "name:argument", e.g.
"classical-ct", "bundle:/srv/bundles/ct_muscle". `create` builds an engine (models are loaded
then, once per worker); `identify` names it without building it, for routing. Each engine module
lists its kinds in `ENGINES`; the registry imports them, never the other way round.

May import `myonode.models`, `core` and `dicom`.
"""

from __future__ import annotations

from myonode.core.types import Engine, EngineError, EngineIdentity, EngineKind

_KINDS: dict[str, EngineKind] = {}


def register(name: str, kind: EngineKind) -> None:
    """Add an engine kind (a site's own engine, or a test's)."""
    _KINDS[name] = kind


def _kind(spec: str) -> tuple[EngineKind, str | None]:
    name, _, argument = spec.partition(":")
    if not _KINDS.keys() >= _builtin_kinds().keys():
        _KINDS.update({k: v for k, v in _builtin_kinds().items() if k not in _KINDS})
    if name not in _KINDS:
        known = ", ".join(sorted(_KINDS))
        raise EngineError(f"unknown engine {name!r} in {spec!r}; known engines: {known}")
    return _KINDS[name], argument or None


def create(spec: str) -> Engine:
    """Build the engine an engine spec names."""
    kind, argument = _kind(spec)
    return kind.create(argument)


def identify(spec: str) -> EngineIdentity:
    """Who the engine a spec names is, and its task, without loading any model; `EngineError`
    says why it could not run (unknown name, missing or altered bundle, ...)."""
    kind, argument = _kind(spec)
    return kind.identify(argument)


def _builtin_kinds() -> dict[str, EngineKind]:
    from myonode.infer.engines import (
        bundle,
        classical_ct,
        classical_mr,
        nnunet,
        threshold,
        totalsegmentator,
    )

    kinds: dict[str, EngineKind] = {}
    for module in (bundle, classical_ct, classical_mr, nnunet, threshold, totalsegmentator):
        kinds.update(module.ENGINES)
    return kinds

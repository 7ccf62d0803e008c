"""The pipeline catalog: what each measurement pipeline is called, runs and numbers.

A pipeline is data: the `output:` section of the routing profiles in `dicom_profiles/` that feed
it (title, engine spec, coded procedure, output series numbers, task) — adding one needs a
profile and, when it runs a model, a bundle, never Python. Whether a pipeline can run and which
version it is come from the engine's identity (`infer.engines.identify`: manifests and
checksums), never from a loaded model, so routing runs without torch or a GPU.

May import `infer` (the engine registry's identify), `core` and `dicom`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydicom.sr.coding import Code

from myonode.core.types import Algorithm, EngineError
from myonode.infer.engines import identify

log = logging.getLogger(__name__)

Task = Literal["segmentation", "regression"]
VersionOf = Callable[[str], str | None]  # may raise PipelineUnavailable


class PipelineUnavailable(Exception):
    """An installed pipeline cannot run on this node; the message says why and what would fix
    it, and routing records it as the decision's reason."""


class PipelineDefinitionError(ValueError):
    """The profiles define a pipeline incompletely or inconsistently; the message says where."""


class CodeSpec(BaseModel):
    """A coded concept as written in YAML (PS3.3 8.8: value, scheme, meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: str
    scheme: str
    meaning: str

    def code(self) -> Code:
        return Code(self.value, self.scheme, self.meaning)


class PipelineSpec(BaseModel):
    """A profile's `output:` section: the pipeline's definition, or part of it. Profiles that
    feed one pipeline share it; a key set by two of them must have one value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: str | None = None
    engine: str | None = Field(default=None, description="engine spec, see infer.engines")
    procedure: CodeSpec | None = None
    series_number_base: int | None = Field(default=None, ge=1, le=2**31 - 1)
    task: Task | None = None
    needs: str | None = Field(
        default=None, description="what the pipeline needs when no engine is set"
    )
    modality: str | None = Field(
        default=None, description="the images it measures; an engine for another is refused"
    )


@dataclass(frozen=True)
class Pipeline:
    """A named measurement pipeline: engine spec, coded procedure and output numbering.

    `engine` None means the node has no engine that can do the task (`needs` says what is
    required and how to configure it); `task` is the kind of engine it runs.
    """

    name: str
    title: str
    engine: str | None  # engine spec, see infer.engines
    procedure: Code
    series_number_base: int
    task: Task = "segmentation"
    needs: str = ""
    modality: str | None = None  # the images it measures; an engine for another is refused


def pipelines_from(specs: Iterable[tuple[str, PipelineSpec, str]]) -> dict[str, Pipeline]:
    """Pipelines from (pipeline name, spec, where it was written) triples, merged per name."""
    merged: dict[str, dict[str, object]] = {}
    set_by: dict[tuple[str, str], tuple[object, str]] = {}
    for name, spec, source in specs:
        values = merged.setdefault(name, {})
        for key in spec.model_fields_set:
            value = getattr(spec, key)
            earlier = set_by.get((name, key))
            if earlier is not None and earlier[0] != value:
                raise PipelineDefinitionError(
                    f"{source}: output.{key} {value!r} for pipeline {name} differs from "
                    f"{earlier[0]!r} set in {earlier[1]}"
                )
            set_by[(name, key)] = (value, source)
            values[key] = value
    pipelines = {}
    for name, values in merged.items():
        missing = [k for k in ("title", "procedure", "series_number_base") if k not in values]
        if values.get("engine") is None and not values.get("needs"):
            missing.append("engine (or needs)")
        if missing:
            raise PipelineDefinitionError(
                f"pipeline {name}: no enabled profile sets output." + ", output.".join(missing)
            )
        procedure = values["procedure"]
        assert isinstance(procedure, CodeSpec)
        pipelines[name] = Pipeline(
            name=name,
            title=str(values["title"]),
            engine=values.get("engine"),  # type: ignore[arg-type]
            procedure=procedure.code(),
            series_number_base=int(values["series_number_base"]),  # type: ignore[call-overload]
            task=values.get("task") or "segmentation",  # type: ignore[arg-type]
            needs=str(values.get("needs") or ""),
            modality=values.get("modality"),  # type: ignore[arg-type]
        )
    return pipelines


def pipeline_version(algorithm: Algorithm) -> str:
    """What output UIDs are derived from, with the source series: the engine and its version."""
    return f"{algorithm.name}-{algorithm.version}"


def engine_algorithm(pipeline: Pipeline) -> Algorithm:
    """The pipeline's engine identity, or `PipelineUnavailable` saying why it cannot run: no
    engine configured, an engine that cannot be identified (unknown, missing or altered
    bundle, weights not installed), or one of the wrong task or modality. No model is
    loaded."""
    if pipeline.engine is None:
        raise PipelineUnavailable(pipeline.needs or "no engine is configured")
    try:
        identity = identify(pipeline.engine)
    except EngineError as exc:
        log.error("pipeline %s unavailable: %s", pipeline.name, exc)
        raise PipelineUnavailable(
            f"its engine cannot be created ({type(exc).__name__}: {exc})"
        ) from exc
    if identity.task != pipeline.task:
        raise PipelineUnavailable(
            f"engine {pipeline.engine!r} is a {identity.task} engine; it needs a "
            f"{pipeline.task} engine"
        )
    if identity.modality and pipeline.modality and identity.modality != pipeline.modality:
        raise PipelineUnavailable(
            f"engine {pipeline.engine!r} segments {identity.modality} images; pipeline "
            f"{pipeline.name} measures {pipeline.modality}"
        )
    return identity.algorithm


def pipeline_versions(pipelines: Mapping[str, Pipeline]) -> VersionOf:
    """`version_of` for routing: a pipeline's version, None where the node has no such
    pipeline, and `PipelineUnavailable` with the reason where it cannot run."""

    def version_of(name: str) -> str | None:
        if name not in pipelines:
            return None
        return pipeline_version(engine_algorithm(pipelines[name]))

    return version_of

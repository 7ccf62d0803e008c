"""Pipelines: load a routed series, segment it and measure (or, for a regression model such
as SARC-CXR, predict from it), and write SEG + SR + PDF.

`Runner` keeps one engine instance per pipeline for the life of the worker, so models (and
any costly set-up) are loaded once, not per job. A pipeline without a usable engine raises
`PipelineUnavailable` with the reason, which routing records instead of queueing a job.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .assessment import Assessment, Prior, assess, assess_predictions
from .encode import Device, OutputIdentity, conform_copied_attributes
from .encode.pdf import build_encapsulated_pdf, render_key_image, render_pdf
from .encode.seg import build_segmentation, segment_numbers
from .encode.sr import build_report
from .engines import Clinical, Engine, LabelMap, RegressionEngine
from .engines import create as create_engine
from .inputs import load_one_radiograph
from .patient import patient_facts
from .prediction import Prediction, predictions_from
from .results import ResultRow, result_rows
from .routing.select import PipelineUnavailable
from .sarcopenia import ADULT_AGE_YEARS
from .storage import write_durably
from .volume import Volume, load_series

OVERLAY_PNG = "overlay.png"


@dataclass(frozen=True)
class Pipeline:
    """A named measurement pipeline: default engine, coded procedure and output numbering.

    `engine` None means the node ships no engine that can do the task (`needs` says what is
    required and how to configure it); `task` is the kind of engine it runs.
    """

    name: str
    title: str
    engine: str | None  # engine spec, see engines.create
    procedure: Code
    series_number_base: int
    task: Literal["segmentation", "regression"] = "segmentation"
    needs: str = ""
    modality: str | None = None  # the images it measures; an engine for another is refused

    def output_identity(self, source: Dataset, engine: Engine) -> OutputIdentity:
        """What this pipeline's outputs for `source`'s series are numbered and named by."""
        return OutputIdentity(
            source_series_uid=str(source.SeriesInstanceUID),
            pipeline=self.name,
            pipeline_version=pipeline_version(engine),
            series_number_base=self.series_number_base,
        )


PIPELINES: dict[str, Pipeline] = {
    "ct_muscle": Pipeline(
        name="ct_muscle",
        title="CT abdominal muscle",
        engine="classical-ct",
        procedure=codes.cid100.CTUnspecifiedBodyRegion,
        series_number_base=9100,
        modality="CT",
    ),
    "mr_muscle": Pipeline(
        name="mr_muscle",
        title="MR lumbar or thigh muscle",
        engine="classical-mr",
        procedure=codes.cid100.MRIUnspecifiedBodyRegion,
        series_number_base=9200,
        modality="MR",
    ),
    "cxr_sarcopenia": Pipeline(
        name="cxr_sarcopenia",
        title="Chest radiograph sarcopenia (SARC-CXR)",
        engine=None,  # no classical method predicts muscle from a radiograph
        procedure=codes.cid100.XRUnspecifiedBodyRegion,
        series_number_base=9400,
        task="regression",
        needs=(
            "a trained SARC-CXR (seed 004) model bundle is required and none is configured; "
            "set output.engine: bundle:/path/to/bundle in the cxr_sarcopenia profile "
            "(README, Models)"
        ),
    ),
}


def pipeline_version(engine: Engine) -> str:
    """What output UIDs are derived from, with the source series: the engine and its version."""
    return f"{engine.algorithm.name}-{engine.algorithm.version}"


@dataclass(frozen=True)
class OutputFile:
    sop_uid: str
    sop_class_uid: str
    path: Path


@dataclass
class JobOutput:
    files: list[OutputFile]
    assessment: Assessment

    def result_rows(self) -> list[ResultRow]:
        return result_rows(self.assessment)


def _save(dataset: Dataset, path: Path) -> None:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    write_durably(path, buffer.getvalue())


class Runner:
    """Runs pipeline jobs with resident engines; safe to share between worker threads.

    Engines are created on first use and kept, keyed by engine spec, for the life of the
    runner: a model is loaded once per worker process, not once per job.
    """

    def __init__(
        self, device: Device | None = None, pipelines: Mapping[str, Pipeline] | None = None
    ) -> None:
        self.device = device or Device()
        self.pipelines = dict(PIPELINES if pipelines is None else pipelines)
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.engine_loads = 0

    def engine(self, pipeline: str) -> Engine:
        """The pipeline's resident engine; `PipelineUnavailable` if it has none or the
        configured one does the wrong task (a segmentation model for a regression pipeline)
        or was trained on another modality (an engine's optional `modality`)."""
        definition = self.pipelines[pipeline]
        spec = definition.engine
        if spec is None:
            raise PipelineUnavailable(definition.needs or "no engine is configured")
        with self._lock:
            if spec not in self._engines:
                self._engines[spec] = create_engine(spec)
                self.engine_loads += 1
            engine = self._engines[spec]
        task = "regression" if hasattr(engine, "estimate") else "segmentation"
        if task != definition.task:
            raise PipelineUnavailable(
                f"engine {spec!r} is a {task} engine; it needs a {definition.task} engine"
            )
        modality = getattr(engine, "modality", None)
        if modality and definition.modality and modality != definition.modality:
            raise PipelineUnavailable(
                f"engine {spec!r} segments {modality} images; pipeline {pipeline} measures "
                f"{definition.modality}"
            )
        return engine

    def version(self, pipeline: str) -> str:
        return pipeline_version(self.engine(pipeline))

    def run(
        self,
        pipeline_name: str,
        paths: Sequence[Path],
        out_dir: Path,
        reasons: Sequence[str] = (),
        priors: Sequence[Prior] = (),
        notes: Sequence[str] = (),
        volume: Volume | None = None,
    ) -> JobOutput:
        """Segment one series, assess it, and write SEG (if anything was found), SR and PDF
        (and the key image as PNG beside them); a regression pipeline predicts instead
        (`_predict`).

        `notes` are sentences for the report from outside the pipeline (e.g. a failed prior
        lookup), so a reader is never left to assume something that was not checked.
        `volume` is the job's assembled inputs (routing's `inputs`); without it the series at
        `paths` is loaded.
        """
        pipeline = self.pipelines[pipeline_name]
        engine = self.engine(pipeline_name)
        if pipeline.task == "regression":
            return self._predict(pipeline, engine, paths, out_dir, reasons, notes, volume)
        volume = load_series(paths) if volume is None else volume
        conform_copied_attributes(volume.datasets)
        label_map = engine.segment(volume)
        source = volume.datasets[0]
        assessment = assess(
            volume, label_map, str(source.get("Modality", "")), patient_facts(source), priors
        )
        assessment.notes.extend(notes)
        identity = pipeline.output_identity(source, engine)
        numbers = segment_numbers(label_map)
        seg = (
            build_segmentation(volume, label_map, engine.algorithm, identity, self.device)
            if numbers
            else None
        )
        sr = build_report(
            volume.datasets,
            seg,
            numbers,
            assessment,
            engine.algorithm,
            identity,
            self.device,
            pipeline.procedure,
            reasons,
            slices_are_sources=volume.slices_are_sources,
        )
        pdf = self._pdf(
            f"Muscle report: {pipeline.title}", volume, label_map, assessment, engine, identity, sr
        )
        if seg is not None:  # for the dashboard; not an output that is sent anywhere
            write_durably(out_dir / OVERLAY_PNG, render_key_image(volume, label_map))
        return JobOutput(_write(out_dir, seg=seg, sr=sr, report=pdf), assessment)

    def _predict(
        self,
        pipeline: Pipeline,
        engine: RegressionEngine,
        paths: Sequence[Path],
        out_dir: Path,
        reasons: Sequence[str],
        notes: Sequence[str],
        volume: Volume | None,
    ) -> JobOutput:
        """A regression job (SARC-CXR): predict from the radiograph, assess the sarcopenia
        criteria on the predicted inputs, and write SR and PDF; no SEG, since nothing is
        segmented, and the radiograph is the SR's source image."""
        volume = load_one_radiograph(paths) if volume is None else volume
        conform_copied_attributes(volume.datasets)
        source = volume.datasets[0]
        facts = patient_facts(source)
        if facts.age_years is not None and facts.age_years < ADULT_AGE_YEARS:
            predictions, model_notes = (
                [],
                [
                    f"The patient is {facts.age_years:.0f} years old; the model is for adults, "
                    "so nothing is predicted."
                ],
            )
        else:
            outcome = engine.assess(volume.array[0], Clinical.from_facts(facts))
            predictions, omitted = predictions_from(outcome.estimates, facts)
            if outcome.probability is not None:
                predictions.append(Prediction("sarcopenia_probability", outcome.probability, None))
            model_notes = [*outcome.notes, *omitted]
        assessment = assess_predictions(facts, predictions, [*model_notes, *notes])
        identity = pipeline.output_identity(source, engine)
        sr = build_report(
            volume.datasets,
            None,
            {},
            assessment,
            engine.algorithm,
            identity,
            self.device,
            pipeline.procedure,
            reasons,
        )
        nothing = LabelMap(labels=np.zeros((0, 0, 0), dtype=np.uint8), structures={})
        pdf = self._pdf(
            f"Report: {pipeline.title}", volume, nothing, assessment, engine, identity, sr
        )
        return JobOutput(_write(out_dir, sr=sr, report=pdf), assessment)

    def _pdf(
        self,
        title: str,
        volume: Volume,
        label_map: LabelMap,
        assessment: Assessment,
        engine: Engine,
        identity: OutputIdentity,
        sr: Dataset,
    ) -> Dataset:
        """The visual report, an Encapsulated PDF in the study that names the SR it restates."""
        return build_encapsulated_pdf(
            render_pdf(volume, label_map, assessment, engine.algorithm, title),
            volume.datasets[0],
            identity,
            self.device,
            title,
            derived_from=[sr],
        )


def _write(out_dir: Path, **datasets: Dataset | None) -> list[OutputFile]:
    """Save each output as `<name>.dcm`; a None output (no SEG) is skipped."""
    files = []
    for name, dataset in datasets.items():
        if dataset is None:
            continue
        path = out_dir / f"{name}.dcm"
        _save(dataset, path)
        files.append(OutputFile(str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), path))
    return files

"""One job through the stages: load a routed series, segment it, check the segmentation's
plausibility (`myonode.qc`) and measure (or, for a regression model such as SARC-CXR,
predict from it), and write SEG + SR + PDF.

`Runner` keeps one engine instance per engine spec for the life of the worker, so models (and
any costly set-up) are loaded once, not per job. A pipeline without a usable engine raises
`PipelineUnavailable` with the reason (routing has normally recorded it already).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from myonode.core.patient import patient_facts
from myonode.core.types import Clinical, Engine, LabelMap, RegressionEngine
from myonode.core.volume import Volume, load_series
from myonode.encode import Device, OutputIdentity, conform_copied_attributes
from myonode.encode.pdf import build_encapsulated_pdf, render_key_image, render_pdf
from myonode.encode.seg import build_segmentation, segment_numbers
from myonode.encode.sr import build_report
from myonode.infer.engines import create as create_engine
from myonode.infer.inputs import load_one_radiograph
from myonode.measure.assessment import Assessment, Prior, assess, assess_predictions
from myonode.measure.prediction import Prediction, predictions_from
from myonode.measure.results import result_rows
from myonode.measure.sarcopenia import ADULT_AGE_YEARS
from myonode.pipelines import Pipeline, engine_algorithm, pipeline_version
from myonode.qc.checks import quality_control
from myonode.route.profiles import builtin_pipelines
from myonode.store.files import write_durably
from myonode.store.records import ResultRow

OVERLAY_PNG = "overlay.png"


def output_identity(pipeline: Pipeline, source: Dataset, engine: Engine) -> OutputIdentity:
    """What a pipeline's outputs for `source`'s series are numbered and named by."""
    return OutputIdentity(
        source_series_uid=str(source.SeriesInstanceUID),
        pipeline=pipeline.name,
        pipeline_version=pipeline_version(engine.algorithm),
        series_number_base=pipeline.series_number_base,
    )


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
        self.pipelines = dict(builtin_pipelines() if pipelines is None else pipelines)
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.engine_loads = 0

    def engine(self, pipeline: str) -> Engine:
        """The pipeline's resident engine; `PipelineUnavailable` if it has none, it cannot be
        identified or it does the wrong task (checked before anything is loaded)."""
        definition = self.pipelines[pipeline]
        engine_algorithm(definition)
        spec = definition.engine
        assert spec is not None  # engine_algorithm refuses a pipeline without one
        with self._lock:
            if spec not in self._engines:
                self._engines[spec] = create_engine(spec)
                self.engine_loads += 1
            return self._engines[spec]

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
        modality, facts = str(source.get("Modality", "")), patient_facts(source)
        quality = quality_control(volume, label_map, modality, facts)
        assessment = assess(volume, label_map, modality, facts, priors, quality=quality)
        assessment.notes.extend(notes)
        identity = output_identity(pipeline, source, engine)
        numbers = segment_numbers(label_map)
        seg = (
            build_segmentation(volume, label_map, engine.algorithm, identity, self.device, quality)
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
            frame_numbers=volume.frame_numbers,
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
        identity = output_identity(pipeline, source, engine)
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

"""Pipelines: load a routed series, segment it, measure, and write SEG + SR.

`Runner` keeps one engine instance per pipeline for the life of the worker, so models (and
any costly set-up) are loaded once, not per job.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .assessment import Assessment, Prior, assess
from .encode import Device, OutputIdentity, add_absent_type2
from .encode.pdf import build_encapsulated_pdf, render_key_image, render_pdf
from .encode.seg import build_segmentation, segment_numbers
from .encode.sr import build_report
from .engines import SegmentationEngine
from .engines import create as create_engine
from .patient import patient_facts
from .results import ResultRow, result_rows
from .storage import write_durably
from .volume import Volume, load_series

OVERLAY_PNG = "overlay.png"


@dataclass(frozen=True)
class Pipeline:
    """A named measurement pipeline: default engine, coded procedure and output numbering."""

    name: str
    title: str
    engine: str  # engine spec, see engines.create
    procedure: Code
    series_number_base: int


PIPELINES: dict[str, Pipeline] = {
    "ct_muscle": Pipeline(
        name="ct_muscle",
        title="CT abdominal muscle",
        engine="classical-ct",
        procedure=codes.cid100.CTUnspecifiedBodyRegion,
        series_number_base=9100,
    ),
    "mr_muscle": Pipeline(
        name="mr_muscle",
        title="MR lumbar or thigh muscle",
        engine="classical-mr",
        procedure=codes.cid100.MRIUnspecifiedBodyRegion,
        series_number_base=9200,
    ),
}


def pipeline_version(engine: SegmentationEngine) -> str:
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
        self._engines: dict[str, SegmentationEngine] = {}
        self._lock = threading.Lock()
        self.engine_loads = 0

    def engine(self, pipeline: str) -> SegmentationEngine:
        spec = self.pipelines[pipeline].engine
        with self._lock:
            if spec not in self._engines:
                self._engines[spec] = create_engine(spec)
                self.engine_loads += 1
            return self._engines[spec]

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
        (and the key image as PNG beside them).

        `notes` are sentences for the report from outside the pipeline (e.g. a failed prior
        lookup), so a reader is never left to assume something that was not checked.
        `volume` is the job's assembled inputs (routing's `inputs`); without it the series at
        `paths` is loaded.
        """
        pipeline = self.pipelines[pipeline_name]
        engine = self.engine(pipeline_name)
        volume = load_series(paths) if volume is None else volume
        add_absent_type2(volume.datasets)
        label_map = engine.segment(volume)
        source = volume.datasets[0]
        assessment = assess(
            volume, label_map, str(source.get("Modality", "")), patient_facts(source), priors
        )
        assessment.notes.extend(notes)
        identity = OutputIdentity(
            source_series_uid=str(source.SeriesInstanceUID),
            pipeline=pipeline.name,
            pipeline_version=pipeline_version(engine),
            series_number_base=pipeline.series_number_base,
        )
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
        title = f"Muscle report: {pipeline.title}"
        pdf = build_encapsulated_pdf(
            render_pdf(volume, label_map, assessment, engine.algorithm, title),
            source,
            identity,
            self.device,
            title,
            derived_from=[sr],
        )
        if seg is not None:  # for the dashboard; not an output that is sent anywhere
            write_durably(out_dir / OVERLAY_PNG, render_key_image(volume, label_map))
        files = []
        for name, dataset in (("seg.dcm", seg), ("sr.dcm", sr), ("report.dcm", pdf)):
            if dataset is None:
                continue
            path = out_dir / name
            _save(dataset, path)
            files.append(OutputFile(str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), path))
        return JobOutput(files=files, assessment=assessment)

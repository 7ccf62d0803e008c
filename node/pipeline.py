"""Pipelines: load a routed series, segment it, measure, and write SEG + SR.

`Runner` keeps one engine instance per pipeline for the life of the worker, so models (and
any costly set-up) are loaded once, not per job.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from .encode import Device, OutputIdentity, add_absent_type2
from .encode.seg import build_segmentation, segment_numbers
from .encode.sr import build_report
from .engines import SegmentationEngine
from .engines import create as create_engine
from .measure import StructureMeasurements, measure_structures
from .storage import write_durably
from .volume import load_series


@dataclass(frozen=True)
class Pipeline:
    """A named measurement pipeline: default engine, coded procedure and output numbering."""

    name: str
    engine: str  # engine spec, see engines.create
    procedure: Code
    series_number_base: int


PIPELINES: dict[str, Pipeline] = {
    "ct_muscle": Pipeline(
        name="ct_muscle",
        engine="threshold",
        procedure=codes.cid100.CTUnspecifiedBodyRegion,
        series_number_base=9100,
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
    measurements: list[StructureMeasurements]
    notes: list[str] = field(default_factory=list)

    def result_rows(self) -> list[tuple[str, str, float | None, str]]:
        """(structure, quantity, value, unit) rows for the results index."""
        rows = []
        for m in self.measurements:
            key = m.structure.key
            rows += [
                (key, "voxel_count", float(m.voxel_count), "{voxel}"),
                (key, "volume", m.volume_cm3, "cm3"),
                (key, "mass", m.mass_g, "g"),
            ]
            if m.mean_intensity is not None:
                rows.append((key, "mean_attenuation", m.mean_intensity, "[hnsf'U]"))
        return rows


def _save(dataset: Dataset, path: Path) -> None:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    write_durably(path, buffer.getvalue())


class Runner:
    """Runs pipeline jobs with resident engines; safe to share between worker threads.

    Engines are created on first use and kept, keyed by engine spec, for the life of the
    runner: a model is loaded once per worker process, not once per job.
    """

    def __init__(self, device: Device | None = None) -> None:
        self.device = device or Device()
        self._engines: dict[str, SegmentationEngine] = {}
        self._lock = threading.Lock()
        self.engine_loads = 0

    def engine(self, pipeline: str) -> SegmentationEngine:
        spec = PIPELINES[pipeline].engine
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
    ) -> JobOutput:
        pipeline = PIPELINES[pipeline_name]
        engine = self.engine(pipeline_name)
        volume = load_series(paths)
        add_absent_type2(volume.datasets)
        label_map = engine.segment(volume)
        measurements = measure_structures(
            label_map.labels, label_map.structures, volume.geometry, volume.array
        )
        identity = OutputIdentity(
            source_series_uid=str(volume.datasets[0].SeriesInstanceUID),
            pipeline=pipeline.name,
            pipeline_version=pipeline_version(engine),
            series_number_base=pipeline.series_number_base,
        )
        seg = build_segmentation(volume, label_map, engine.algorithm, identity, self.device)
        sr = build_report(
            volume.datasets,
            seg,
            segment_numbers(label_map),
            measurements,
            engine.algorithm,
            identity,
            self.device,
            pipeline.procedure,
            comments=[*(f"Series selection: {r}" for r in reasons), *label_map.notes],
        )
        files = []
        for name, dataset in (("seg.dcm", seg), ("sr.dcm", sr)):
            path = out_dir / name
            _save(dataset, path)
            files.append(OutputFile(str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), path))
        return JobOutput(files=files, measurements=measurements, notes=list(label_map.notes))

"""The value objects stages hand each other: what an engine produced and who produced it.

`LabelMap` (a segmentation and its landmarks), `Estimate`/`RegressionResult` (a regression),
`Algorithm` (identification for the SEG and SR) and the engine protocols live here, below
every stage, so measurement and encoding never import the engines themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from myonode.core.patient import PatientFacts
from myonode.core.volume import Volume
from myonode.dicom.anatomy import Structure

IntendedUse = Literal["demo", "research", "clinical"]


@dataclass(frozen=True)
class Algorithm:
    """Identification of the algorithm that produced a result (PS3.3 C.8.20.2, TID 4019)."""

    name: str
    version: str
    family: Code
    kind: Literal["classical", "deep learning"]
    intended_use: IntendedUse
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def classical(
        cls,
        name: str,
        version: str,
        parameters: dict[str, str],
        intended_use: IntendedUse = "research",
    ) -> Algorithm:
        """A weight-free image-analysis engine: family Morphological Operations (CID 7162)."""
        return cls(
            name=name,
            version=version,
            family=codes.cid7162.MorphologicalOperations,
            kind="classical",
            intended_use=intended_use,
            parameters=parameters,
        )

    @property
    def label(self) -> str:
        return f"{self.name} {self.version} ({self.kind}, intended use: {self.intended_use})"


# What every classical engine's report says first.
CLASSICAL_NOTE = (
    "Classical engine (no trained model), research use only; not validated for clinical use."
)


@dataclass
class LabelMap:
    """An engine's output: one integer label per voxel and what each label means.

    `landmarks` carries what the engine found about the anatomy, for measurement: slice
    indices (k) such as ``l3_slice``, ``region_top_slice``/``region_bottom_slice`` (the
    measured region, inclusive) and anything else an engine documents. `notes` are
    sentences for the report (limits, partial field of view, ...). `confidence` maps a label
    to the model's mean probability for that label over the voxels it was given (0..1);
    engines without probabilities leave it empty.
    """

    labels: np.ndarray
    structures: dict[int, Structure]
    notes: list[str] = field(default_factory=list)
    landmarks: dict[str, int | float] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)

    def present(self) -> set[int]:
        """The label values that occur (0 included where it does), as `np.unique` finds
        them, counted slice by slice: unique sorts a copy of all of a scanner series' 80
        million voxels, twice per job (SEG and QC)."""
        labels = self.labels
        if labels.dtype.kind != "u" or labels.ndim == 0 or labels.size == 0:
            return set(np.unique(labels).tolist())
        counts = np.zeros(int(labels.max()) + 1, dtype=np.int64)
        for plane in labels.reshape(labels.shape[0], -1):
            counts += np.bincount(plane, minlength=len(counts))
        return set(np.flatnonzero(counts).tolist())

    def mask_of(self, values: Iterable[int]) -> np.ndarray:
        """Where the label is one of `values`: `np.isin`, without the copy of 8-byte
        indices it makes of every voxel (a lookup table indexed by the labels instead)."""
        wanted = sorted({int(v) for v in values})
        labels = self.labels
        if labels.dtype.kind != "u" or labels.dtype.itemsize > 2:
            return np.isin(labels, wanted)
        table = np.zeros(np.iinfo(labels.dtype).max + 1, dtype=bool)
        table[[v for v in wanted if 0 <= v < len(table)]] = True
        return table[labels]


class SegmentationEngine(Protocol):
    algorithm: Algorithm

    def segment(self, volume: Volume) -> LabelMap: ...


@dataclass(frozen=True)
class Estimate:
    """A regressed quantity as a Gaussian: mean `mu` and standard deviation `sigma` (seed 004)."""

    mu: float
    sigma: float
    unit: str


@dataclass(frozen=True)
class Clinical:
    """Clinical inputs of a model's second step (seed 004: age, sex, BMI); any may be missing,
    and then no probability is given."""

    age: float | None
    sex: str | None  # "M" or "F"
    bmi: float | None

    @classmethod
    def from_facts(cls, facts: PatientFacts) -> Clinical:
        """From the node's one reading of the header (`patient.patient_facts`)."""
        return cls(age=facts.age_years, sex=facts.sex, bmi=facts.bmi)

    def missing(self) -> list[str]:
        return [
            name
            for name, value in (("age", self.age), ("sex", self.sex), ("BMI", self.bmi))
            if value is None
        ]

    def features(self) -> list[float] | None:
        if self.missing():
            return None
        return [self.age, 1.0 if self.sex == "M" else 0.0, self.bmi]  # type: ignore[list-item]


@dataclass
class RegressionResult:
    """A regression engine's answer for one image: the estimates, the probability its second
    step gives (None without one or without the clinical inputs), and notes for the report."""

    estimates: dict[str, Estimate]
    probability: float | None
    notes: list[str] = field(default_factory=list)


class RegressionEngine(Protocol):
    """Image -> Gaussian estimates per target (e.g. ALM, handgrip, chair-rise time)."""

    algorithm: Algorithm
    targets: tuple[str, ...]

    def estimate(self, image: np.ndarray) -> dict[str, Estimate]: ...

    def assess(self, image: np.ndarray, clinical: Clinical) -> RegressionResult: ...


Engine = SegmentationEngine | RegressionEngine


class EngineError(ValueError):
    """An engine specification cannot be resolved (unknown name, missing bundle, ...)."""


@dataclass(frozen=True)
class EngineIdentity:
    """What an engine spec names, known without building the engine: who it is (for output
    UIDs and the pipeline version) and which task it does."""

    algorithm: Algorithm
    task: Literal["segmentation", "regression"]
    modality: str | None = None  # the images it was trained on; None: not tied to one


@dataclass(frozen=True)
class EngineKind:
    """One kind of engine in the registry: how to build it (loads models; once per worker) and
    how to identify a spec of it cheaply (reads manifests; no model, no torch), which is all
    routing ever asks."""

    create: Callable[[str | None], Engine]
    identify: Callable[[str | None], EngineIdentity]

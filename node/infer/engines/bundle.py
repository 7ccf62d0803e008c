"""MONAI-bundle engines: ``bundle:/path/to/bundle``.

A segmentation bundle becomes a `SegmentationEngine` (Volume -> LabelMap with per-label
confidence); a regression bundle (seed 004) becomes a `RegressionEngine` (`CxrModel`). The
weights are checksum-verified and loaded when the engine is created, and the engine is kept
by the `Runner`, so a worker loads each model once. Torch and MONAI are imported only when a
bundle engine is created.
"""

from __future__ import annotations

from pathlib import Path

from myonode.core.types import EngineError, EngineIdentity, EngineKind, LabelMap
from myonode.core.volume import Volume


class BundleEngine:
    """A segmentation bundle behind the `SegmentationEngine` interface.

    The label map names only the structures the model found; the others are listed in a
    note (a structure the model missed is not a measured zero volume).
    """

    def __init__(self, bundle, device: str | None = None) -> None:
        from myonode.models.runtime import SegmentationModel

        self.bundle = bundle
        self.model = SegmentationModel(bundle, device)
        self.structures = self.bundle.structures()
        self.algorithm = bundle.algorithm(device=str(self.model.device))

    def segment(self, volume: Volume) -> LabelMap:
        prediction = self.model.predict(volume)
        notes = []
        if demo := self.bundle.demo_statement():
            notes.append(f"{demo}; its labels are not measurements of real anatomy.")
        present = {
            label: s for label, s in self.structures.items() if label in prediction.confidence
        }
        absent = [s.name for label, s in self.structures.items() if label not in present]
        if absent:
            notes.append("Not found by the model: " + ", ".join(absent) + ".")
        return LabelMap(
            labels=prediction.labels,
            structures=present,
            notes=notes,
            confidence=prediction.confidence,
        )


def create_bundle_engine(argument: str | None):
    """`bundle:PATH` -> the engine its manifest's task calls for."""
    if not argument:
        raise EngineError("the bundle engine needs a path: bundle:/path/to/bundle")
    from myonode.models.bundle import BundleError, load_bundle

    try:
        bundle = load_bundle(Path(argument))
        if bundle.manifest.task == "regression":
            from myonode.models.cxr import CxrModel

            return CxrModel(bundle)
        return BundleEngine(bundle)
    except BundleError as exc:
        raise EngineError(str(exc)) from exc


def identify_bundle(argument: str | None) -> EngineIdentity:
    """`bundle:PATH` named from its checked manifest: no config parsed, no model loaded."""
    if not argument:
        raise EngineError("the bundle engine needs a path: bundle:/path/to/bundle")
    from myonode.models.bundle import BundleError, algorithm_of, checked_manifest

    try:
        manifest = checked_manifest(Path(argument))
    except BundleError as exc:
        raise EngineError(str(exc)) from exc
    return EngineIdentity(algorithm_of(manifest), manifest.task)


ENGINES = {"bundle": EngineKind(create=create_bundle_engine, identify=identify_bundle)}

"""Muscle-density tissue by attenuation threshold: the walking skeleton's CT engine.

It keeps voxels in the skeletal-muscle attenuation range (-29..150 HU, seed 000) inside the
body. Organs, bowel wall and vessels fall in the same range, so this is *muscle-density
tissue*, not muscle; its intended use is "demo" and the outputs say so.
"""

from __future__ import annotations

import numpy as np

from myonode.core.types import Algorithm, EngineIdentity, EngineKind, LabelMap
from myonode.core.volume import Volume
from myonode.dicom.anatomy import MUSCLE_DENSITY_TISSUE
from myonode.infer.engines.morphology import fill_holes_per_slice, largest_component

MUSCLE_HU = (-29.0, 150.0)
BODY_HU = -500.0


def body_mask(hu: np.ndarray) -> np.ndarray:
    """The patient's body: the largest connected region denser than air, holes filled per slice."""
    return fill_holes_per_slice(largest_component(hu > BODY_HU))


class ThresholdMuscleEngine:
    algorithm = Algorithm.classical(
        "myonode-hu-threshold",
        "0.1.0",
        {"muscle_hu_min": str(MUSCLE_HU[0]), "muscle_hu_max": str(MUSCLE_HU[1])},
        intended_use="demo",
    )

    def segment(self, volume: Volume) -> LabelMap:
        hu = volume.array
        mask = body_mask(hu) & (hu >= MUSCLE_HU[0]) & (hu <= MUSCLE_HU[1])
        return LabelMap(
            labels=mask.astype(np.uint8),
            structures={1: MUSCLE_DENSITY_TISSUE},
            notes=[
                "Attenuation threshold only: organs and vessels of muscle density are included."
            ],
        )


ENGINES = {
    "threshold": EngineKind(
        create=lambda _argument: ThresholdMuscleEngine(),
        identify=lambda _argument: EngineIdentity(ThresholdMuscleEngine.algorithm, "segmentation"),
    )
}

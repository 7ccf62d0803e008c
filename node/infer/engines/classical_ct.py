"""`classical-ct`: the default CT engine, from anatomy and attenuation, with no weights.

Steps (all in the canonical orientation, see `orientation.py`, on a grid of at most 3 mm
slices and 1.5 mm pixels, see `working_grid.py`, labels mapped back to every source
voxel): landmarks (body, spine and the patient's roll, lungs, hip bones, sacroiliac
joints, vertebral levels), the muscular body wall, the posterior groups around the spine
(psoas followed along z, `psoas.track_psoas`), the iliopsoas below L5 with the iliacus,
the gluteal groups, the wall groups, and the remainder of skeletal muscle. Labels are
exclusive and cover each muscle wherever it is in view. Whatever cannot be found is left
out and said in a note, never guessed.

`LabelMap.landmarks` (source slice indices, k as stored; "top" is the superior end):
- `region_top_slice` (lung base), `region_bottom_slice` (inferior aspect of L5),
  `region_complete` (1 when both are found): the seed 000 region;
- `l3_slice` (mid-L3, only when L3 is whole in view);
- `l1_top_slice`, `l1_bottom_slice` ... `l5_top_slice`, `l5_bottom_slice`: the vertebral
  bodies named and whole in view;
- `sacroiliac_top_slice`, `sacroiliac_bottom_slice`: the sacroiliac joints (sacrum);
- `rib12_head_slice`: the lowest rib head, taken as the 12th.
Absent keys were not found.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from myonode.core.types import CLASSICAL_NOTE, Algorithm, EngineIdentity, EngineKind, LabelMap
from myonode.core.volume import Volume
from myonode.dicom.anatomy import (
    ERECTOR,
    GLUTEUS_MAX,
    GLUTEUS_MED,
    ILIOPSOAS_SIDES,
    LATERAL_ABD,
    OTHER_SKELETAL_MUSCLE,
    PSOAS,
    QUADRATUS,
    RECTUS,
    Structure,
)
from myonode.infer.engines.body_wall import wall_band
from myonode.infer.engines.landmarks_ct import FAT_HU, MUSCLE_HU, CtLandmarks, Spine, ct_landmarks
from myonode.infer.engines.morphology import (
    disk,
    largest_component,
    slice_disk,
    smooth_in_plane,
    split_bulges,
)
from myonode.infer.engines.muscle_groups_ct import (
    gluteal_groups,
    iliacus,
    muscle_range,
    partial_volume_rim,
)
from myonode.infer.engines.orientation import Canonical, OrientationError, canonical
from myonode.infer.engines.psoas import track_psoas
from myonode.infer.engines.trunk_muscles import (
    SliceFrame,
    cut_sides,
    posterior_floor,
    posterior_groups,
    wall_groups,
)
from myonode.infer.engines.working_grid import WorkingGrid

VERSION = "0.1.0"
SHEET_MM = 3.0  # posterior layer of the thoracolumbar fascia with the aponeuroses on it

# Label value -> (group key in the engine's masks, structure). Order is priority: a voxel
# claimed by an earlier group is not given to a later one.
_GROUPS: tuple[tuple[str, Structure], ...] = (
    *((f"erector_spinae_{s.side}", s) for s in ERECTOR),
    *((f"psoas_{s.side}", s) for s in PSOAS),
    *((f"iliopsoas_{s.side}", s) for s in ILIOPSOAS_SIDES),
    *((f"quadratus_lumborum_{s.side}", s) for s in QUADRATUS),
    *((f"gluteus_maximus_{s.side}", s) for s in GLUTEUS_MAX),
    *((f"gluteus_medius_{s.side}", s) for s in GLUTEUS_MED),
    *((f"rectus_abdominis_{s.side}", s) for s in RECTUS),
    *((f"lateral_abdominals_{s.side}", s) for s in LATERAL_ABD),
    ("other", OTHER_SKELETAL_MUSCLE),
)

NOTES_ALWAYS = (
    CLASSICAL_NOTE,
    "Erector spinae includes the multifidus (transversospinalis): CT does not separate them.",
    "Gluteus minimus is not separated from gluteus medius.",
)


class ClassicalCtEngine:
    """Muscle groups on CT from attenuation ranges, fat planes and skeletal landmarks."""

    algorithm = Algorithm.classical(
        "myonode-classical-ct",
        VERSION,
        {
            "muscle_hu": f"{MUSCLE_HU[0]:g}..{MUSCLE_HU[1]:g}",
            "fat_hu": f"{FAT_HU[0]:g}..{FAT_HU[1]:g}",
        },
    )

    def segment(self, volume: Volume) -> LabelMap:
        try:
            view = canonical(volume.geometry)
        except OrientationError as error:
            return LabelMap(
                labels=np.zeros(volume.shape, dtype=np.uint8),
                structures={},
                notes=[f"Not segmented: {error}."],
            )
        source = view.view(volume.array)
        grid = WorkingGrid.for_source(source.shape, view.spacing)
        labels, notes, landmarks = segment_canonical(grid.down(source), grid.spacing)
        structures = {
            value: structure
            for value, (_key, structure) in enumerate(_GROUPS, start=1)
            if (labels == value).any()
        }
        missing = [s.name for _key, s in _GROUPS if s not in structures.values()]
        if missing:
            notes.append("Not found in this series: " + ", ".join(missing) + ".")
        found = _source_landmarks(landmarks, view, grid, notes)
        return LabelMap(
            labels=view.restore(grid.up(labels, source, MUSCLE_HU[0])),
            structures=structures,
            notes=[*NOTES_ALWAYS, *notes],
            landmarks=found,
        )


def segment_canonical(
    hu: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray, list[str], CtLandmarks]:
    """Label map (values as in `_GROUPS`), notes and landmarks of a canonical HU array."""
    landmarks = ct_landmarks(hu, spacing)
    notes = list(landmarks.notes)
    smooth = smooth_in_plane(hu, 0.7, spacing)
    fat = (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1])
    # Septa in the subcutaneous fat are thinner than the opening in wall_band.
    band, depth = wall_band(smooth > FAT_HU[1], landmarks.body, fat, spacing)
    attenuation = muscle_range(smooth, depth, landmarks.spine, spacing)
    muscle = (smooth >= attenuation.low) & (smooth <= attenuation.high) & ~landmarks.bone
    lumbar = lumbar_slices(landmarks)
    # Tissue the psoas is followed through along z: muscle attenuation (0 HU and up, as
    # for the search), beneath the wall surface, clear of bone.
    beneath = np.nan_to_num(depth, nan=-1.0) >= 0.0
    psoas_tissue = muscle & (smooth >= 0.0) & beneath & ~landmarks.bone
    lumbar_ks = np.nonzero(lumbar)[0]
    lowest, highest = (int(lumbar_ks[0]), int(lumbar_ks[-1])) if len(lumbar_ks) else (0, 0)
    # Where the pelvis is in view the psoas is followed down to its lowest slice.
    pelvis_ks = np.nonzero(landmarks.pelvis.any(axis=(1, 2)))[0]
    pelvic = int(pelvis_ks[0]) if len(pelvis_ks) else lowest
    # Growth stops at partial-volume fat planes (a quarter fat or more: below about
    # -15 HU for the erector, 0 HU for psoas and quadratus, which touch organs); holes
    # are filled afterwards, so fatty streaks inside a muscle stay part of it.
    masks = posterior_groups(
        muscle & (smooth >= -15.0),
        muscle & (smooth >= 0.0),
        depth,
        landmarks.bone,
        landmarks.spine,
        spacing,
        lumbar,
        floor=posterior_floor(landmarks.bone, landmarks.spine, spacing, landmarks.pelvis),
        sheet_mm=SHEET_MM,
        psoas_z=lambda raw, _side: track_psoas(
            beside_column(raw, landmarks.spine, spacing), psoas_tissue, spacing, pelvic, highest
        ),
    )
    # Below L5 the psoas crosses the pelvic brim and is joined by the iliacus: iliopsoas.
    iliac = iliacus(psoas_tissue, landmarks.pelvis, landmarks.spine, spacing)
    for side in ("left", "right"):
        pelvic_part = masks[f"psoas_{side}"].copy()
        pelvic_part[lowest:] = False
        masks[f"psoas_{side}"][:lowest] = False
        masks[f"iliopsoas_{side}"] = (pelvic_part | iliac[f"iliacus_{side}"]) & ~masks[
            f"psoas_{side}"
        ]
    if landmarks.sacroiliac is not None:
        # Below the sacroiliac joints the muscle behind the sacrum is gluteus maximus.
        for side in ("left", "right"):
            masks[f"erector_spinae_{side}"][: landmarks.sacroiliac[0]] = False
        masks["other"][: landmarks.sacroiliac[0]] = False
    masks |= gluteal_groups(muscle, smooth, depth, landmarks.pelvis, landmarks.spine, spacing)
    claimed = np.zeros(hu.shape, dtype=bool)
    for mask in masks.values():
        claimed |= mask
    back_other = masks.pop("other")
    masks |= wall_groups(band & muscle & ~claimed, landmarks.body, depth, masks, spacing)
    masks["other"] |= back_other | limb_muscle(muscle, landmarks.body, spacing)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for value, (key, _structure) in enumerate(_GROUPS, start=1):
        labels[masks[key] & (labels == 0)] = value
    # The groups keep their cores; their partial-volume border counts as other skeletal
    # muscle, so the total is measured as the standard muscle area is.
    beneath_skin = ndimage.binary_erosion(landmarks.body, slice_disk(3.0, spacing))
    rim = partial_volume_rim(labels > 0, smooth, attenuation.level, beneath_skin & ~landmarks.bone)
    labels[rim] = len(_GROUPS)
    if not landmarks.spine.present.any():
        notes.append("Without the vertebral column only the body wall was segmented.")
    for side in ("left", "right"):
        cut = sum(side in cut_sides(landmarks.body[k]) for k in range(hu.shape[0]))
        if cut:
            notes.append(
                f"The field of view cuts the patient's {side} side on {cut} slices: "
                "no rectus or lateral abdominals labelled there."
            )
    return labels, notes, landmarks


def beside_column(mask: np.ndarray, spine: Spine, spacing: np.ndarray) -> np.ndarray:
    """The bulges of one side's psoas search whose deepest point lies within 25 mm of the
    vertebral body: the psoas arises from the sides of the lumbar bodies and lies against
    them, a kidney joined to it (or found in its place) bulges further out. Slices without
    the column keep what they have."""
    out = mask.copy()
    spacing_ji = (float(spacing[1]), float(spacing[2]))
    for k in np.nonzero(mask.any(axis=(1, 2)) & spine.present)[0]:
        frame = SliceFrame.at(mask.shape[1:], spine, k, spacing)
        near = np.hypot(frame.forward, frame.lateral) <= frame.radius + 25.0
        out[k] = split_bulges(mask[k], near, spacing_ji)
    return out


def lumbar_slices(landmarks: CtLandmarks) -> np.ndarray:
    """Slices where psoas and quadratus lumborum are sought beside the column: below the
    12th rib (or the lung base) and, where the pelvis is in view, down to L5 (or to the top
    of the sacroiliac joints); lower, the psoas leaves the column for the pelvic brim."""
    out = np.ones(landmarks.body.shape[0], dtype=bool)
    upper = landmarks.rib_head if landmarks.rib_head is not None else landmarks.lung_base
    if upper is not None:
        out[upper + 1 :] = False
    l5 = landmarks.vertebra("L5")
    if l5 is not None:
        out[: l5.bottom] = False
    elif landmarks.sacroiliac is not None:
        out[: landmarks.sacroiliac[1]] = False
    return out


def limb_muscle(muscle: np.ndarray, body: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Muscle in the arms lying beside the trunk (body parts apart from the trunk), skin
    excluded: skeletal muscle that belongs to the total but to no abdominal group."""
    out = np.zeros_like(body)
    for k in range(body.shape[0]):
        limbs = body[k] & ~largest_component(body[k])
        if limbs.any():
            inner = ndimage.binary_erosion(limbs, disk(3.0, (spacing[1], spacing[2])))
            out[k] = muscle[k] & inner
    return out


def _source_landmarks(
    landmarks: CtLandmarks, view: Canonical, grid: WorkingGrid, notes: list[str]
) -> dict[str, int | float]:
    """Landmark slices as indices of the source volume; absent ones are explained."""
    if view.order[0] != 0:
        notes.append("Slice landmarks omitted: the series is not stored as axial slices.")
        return {}
    nk = grid.source_shape[0]

    def source(k: int) -> int:
        k = grid.source_slice(k)
        return nk - 1 - k if view.flips[0] else k

    found: dict[str, int | float] = {"region_complete": 0}
    for vertebra in landmarks.vertebrae:
        if vertebra.complete:
            found[f"{vertebra.name.lower()}_top_slice"] = source(vertebra.top)
            found[f"{vertebra.name.lower()}_bottom_slice"] = source(vertebra.bottom)
    if landmarks.sacroiliac is not None:
        found["sacroiliac_bottom_slice"] = source(landmarks.sacroiliac[0])
        found["sacroiliac_top_slice"] = source(landmarks.sacroiliac[1])
    if landmarks.rib_head is not None:
        found["rib12_head_slice"] = source(landmarks.rib_head)
    l3 = landmarks.vertebra("L3")
    if l3 is not None and l3.complete:
        found["l3_slice"] = source(l3.middle)
    else:
        notes.append("L3 not identified: no L3 slice (and no L3 skeletal muscle index).")
    l5 = landmarks.vertebra("L5")
    if landmarks.lung_base is not None:
        found["region_top_slice"] = source(landmarks.lung_base)
    else:
        notes.append("Lung base not in view: the seed 000 region has no superior limit.")
    if l5 is not None and l5.complete:
        found["region_bottom_slice"] = source(l5.bottom)
    else:
        notes.append("Inferior aspect of L5 not found: the seed 000 region has no inferior limit.")
    found["region_complete"] = int("region_top_slice" in found and "region_bottom_slice" in found)
    return found


ENGINES = {
    "classical-ct": EngineKind(
        create=lambda _argument: ClassicalCtEngine(),
        identify=lambda _argument: EngineIdentity(ClassicalCtEngine.algorithm, "segmentation"),
    )
}

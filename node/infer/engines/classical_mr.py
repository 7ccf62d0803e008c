"""`classical-mr`: the default MR engine, from fat/muscle contrast and anatomy, no weights.

Works on Dixon pairs (water image plus `volume.channels["fat"]`) and on plain fat-bright
axial series (T1, T2 fast spin echo). A lumbar station (the two psoas beside a vertebral
body) gives the paraspinal muscles split into multifidus and erector spinae, the psoas
major and the quadratus lumborum; a thigh station (two legs, each with a femur) gives the
anterior, medial and posterior compartments. Anything else, and any series whose
subcutaneous fat is not bright (fat-suppressed, a water image alone), is left unsegmented
with a note. Fat fraction is not computed here: the measurement layer takes it from the
channels.

Landmarks (`LabelMap.landmarks`, source array indices, for quality control) on a lumbar
station stored as axial slices (array axis 0 the slice axis; otherwise omitted, with a
note):

- ``column_bottom_slice``, ``column_top_slice``: the slices where the vertebral column
  was placed (inclusive); ``psoas_top_slice``: the highest slice where it was placed from
  the two psoas muscles (above it, up to 24 mm, it is carried on beneath the back
  muscles, `landmarks_mr.find_spine_mr`) and where psoas and quadratus were sought;
- per column slice s: ``vertebral_body_{s}_row`` and ``vertebral_body_{s}_column`` (the
  centre of the vertebral body, source array indices along axes 1 and 2, as the midpoint
  between the psoas muscles) and ``vertebral_body_{s}_radius_mm`` (half the gap between
  their medial edges). Every paraspinal label lies behind that centre by at least the
  radius plus 5 mm; psoas and quadratus lie beside or behind the body.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from myonode.core.types import CLASSICAL_NOTE, Algorithm, EngineIdentity, EngineKind, LabelMap
from myonode.core.volume import Volume
from myonode.dicom.anatomy import (
    ERECTOR,
    MULTIFIDUS_SIDES,
    PSOAS,
    QUADRATUS,
    THIGH_ANTERIOR,
    THIGH_MEDIAL,
    THIGH_POSTERIOR,
    Structure,
)
from myonode.infer.engines.body_wall import wall_band
from myonode.infer.engines.landmarks_ct import Spine
from myonode.infer.engines.landmarks_mr import (
    MUSCLE_BELOW,
    body_mask_mr,
    fat_likeness,
    find_spine_mr,
    patient_roll_mr,
    subcutaneous_contrast,
)
from myonode.infer.engines.morphology import disk, smooth_in_plane
from myonode.infer.engines.orientation import Canonical, OrientationError, canonical
from myonode.infer.engines.thigh_mr import thigh_compartments
from myonode.infer.engines.trunk_muscles import SIDES, SliceFrame, posterior_groups

VERSION = "0.1.0"
DEEP_MUSCLE_BELOW = 0.25
FAT_BRIGHT_MIN = 0.9  # subcutaneous over deep signal (`subcutaneous_contrast`)
SPINOUS_HALF_WIDTH_MM = 3.0  # lumbar spinous process about 6 mm wide
ARCH_DEPTH_MM = 12.0
ARCH_HALF_WIDTH = 1.2  # times the vertebral body radius
PROCESS_ROOT_MM = 15.0  # lateral of the vertebral body's side
FRONT_SLOPE = 0.3  # mm backwards per mm lateral beyond the process roots
SEPTUM_QUANTILE = 90.0
SEPTUM_REACH_MM = 9.0
SEPTUM_BAND_MM = 3.0
ROLL_MIN_DEG = 3.0  # a smaller roll is left as it is

_LUMBAR: tuple[tuple[str, Structure], ...] = (
    *((f"multifidus_{s.side}", s) for s in MULTIFIDUS_SIDES),
    *((f"erector_spinae_{s.side}", s) for s in ERECTOR),
    *((f"psoas_{s.side}", s) for s in PSOAS),
    *((f"quadratus_lumborum_{s.side}", s) for s in QUADRATUS),
)
_THIGH: tuple[tuple[str, Structure], ...] = (
    *((f"anterior_{s.side}", s) for s in THIGH_ANTERIOR),
    *((f"medial_{s.side}", s) for s in THIGH_MEDIAL),
    *((f"posterior_{s.side}", s) for s in THIGH_POSTERIOR),
)


class ClassicalMrEngine:
    """Lumbar and thigh muscles on MR from fat-likeness, fat planes and landmarks."""

    algorithm = Algorithm.classical(
        "myonode-classical-mr", VERSION, {"muscle_fat_likeness_below": f"{MUSCLE_BELOW:g}"}
    )

    def segment(self, volume: Volume) -> LabelMap:
        try:
            view = canonical(volume.geometry)
        except OrientationError as error:
            return _empty(volume, f"Not segmented: {error}.")
        signal = view.view(volume.array)
        fat = volume.channels.get("fat")
        if fat is None and _water_image(volume):
            return _empty(
                volume,
                "Dixon water image without its fat image: fat is dark here, and the engine "
                "needs the water and fat pair or a fat-bright series; nothing measured.",
            )
        body = body_mask_mr(signal if fat is None else signal + view.view(fat))
        if fat is None:
            contrast = subcutaneous_contrast(signal, body, view.spacing)
            if contrast < FAT_BRIGHT_MIN:
                return _empty(
                    volume,
                    f"Subcutaneous fat is not bright in this series (it is {contrast:.2f} "
                    "times the signal inside the body): fat-suppressed or a water image. "
                    "The engine needs a fat-bright series or a Dixon water and fat pair; "
                    "nothing measured.",
                )
        likeness = fat_likeness(signal, None if fat is None else view.view(fat), view.spacing)
        notes = [CLASSICAL_NOTE, "Dixon fat fraction used." if fat is not None else _plain_note()]
        if body.any() and _touches_edge(body):
            notes.append("The body extends beyond the field of view: lateral parts are cut.")
        roll = patient_roll_mr(likeness, body, view.spacing) if body.any() else 0.0
        if abs(roll) >= ROLL_MIN_DEG:
            # The search for the midline and the psoas pair runs along image columns: the
            # image is turned so the patient lies straight, and the labels turned back.
            likeness, body = _turn(likeness, roll, 1), _turn(body, roll, 0)
            notes.append(
                f"The patient lies rolled by {abs(roll):.0f} degrees on the table: "
                "the image was turned straight for the search."
            )
        else:
            roll = 0.0
        spine, _mid, psoas_slices = find_spine_mr(likeness, body, view.spacing)
        if psoas_slices.sum() >= max(2, 0.5 * len(spine.present)):
            masks = lumbar_groups(likeness, body, spine, psoas_slices, view.spacing)
            groups = _LUMBAR
            notes.append(
                f"Lumbar station: column found from the psoas on {int(psoas_slices.sum())} "
                f"slices, carried on beneath the back muscles on "
                f"{int((spine.present & ~psoas_slices).sum())} more."
            )
        else:
            masks, measured = thigh_compartments(likeness, body, view.spacing, MUSCLE_BELOW)
            groups = _THIGH
            if measured:
                notes.append(f"Thigh station: both femurs found on {measured} slices.")
            else:
                notes.append(
                    "Neither a lumbar station (psoas either side of a vertebral body) nor a "
                    "thigh station (two legs with their femurs) was recognised."
                )
                return LabelMap(
                    labels=np.zeros(volume.shape, dtype=np.uint8), structures={}, notes=notes
                )
        labels = np.zeros(signal.shape, dtype=np.uint8)
        for value, (key, _structure) in enumerate(groups, start=1):
            labels[masks[key] & (labels == 0)] = value
        if roll:
            labels = _turn(labels, -roll, 0)
            spine = _turned_spine(spine, -roll, labels.shape)
        structures = {
            value: structure
            for value, (_key, structure) in enumerate(groups, start=1)
            if (labels == value).any()
        }
        missing = [s.name for _key, s in groups if s not in structures.values()]
        if missing:
            notes.append("Not found in this series: " + ", ".join(missing) + ".")
        landmarks = (
            column_landmarks(spine, psoas_slices, view, labels.shape, notes)
            if groups is _LUMBAR
            else {}
        )
        return LabelMap(
            labels=view.restore(labels), structures=structures, notes=notes, landmarks=landmarks
        )


def column_landmarks(
    spine: Spine,
    psoas_slices: np.ndarray,
    view: Canonical,
    shape: tuple[int, ...],
    notes: list[str],
) -> dict[str, int | float]:
    """The column's extent and per-slice vertebral body centre in source array indices
    (module docstring), from canonical arrays of `shape`; omitted with a note when the
    slices are not array axis 0."""
    if view.order[0] != 0:
        notes.append("Column landmarks omitted: the series is not stored as axial slices.")
        return {}
    found: dict[str, int | float] = {}
    ks = np.nonzero(spine.present)[0]
    if not len(ks):
        return found

    def source(k: int, j: float, i: float) -> tuple[int, float, float]:
        point = [float(k), j, i]
        out = [0.0, 0.0, 0.0]
        for axis, (src, flip) in enumerate(zip(view.order, view.flips, strict=True)):
            out[src] = shape[axis] - 1 - point[axis] if flip else point[axis]
        return round(out[0]), out[1], out[2]

    slices = sorted(source(int(k), 0.0, 0.0)[0] for k in ks)
    found["column_bottom_slice"], found["column_top_slice"] = slices[0], slices[-1]
    psoas_ks = np.nonzero(psoas_slices)[0]
    if len(psoas_ks):
        found["psoas_top_slice"] = source(int(psoas_ks.max()), 0.0, 0.0)[0]
    for k in ks:
        s, row, column = source(int(k), *spine.center[k])
        found[f"vertebral_body_{s}_row"] = round(row, 1)
        found[f"vertebral_body_{s}_column"] = round(column, 1)
        found[f"vertebral_body_{s}_radius_mm"] = round(float(spine.radius_mm[k]), 1)
    return found


def _turn(array: np.ndarray, degrees: float, order: int) -> np.ndarray:
    """Each slice turned about the array's centre (`scipy.ndimage.rotate`), same shape."""
    turned = ndimage.rotate(
        array.astype(np.float32) if array.dtype == bool else array,
        degrees,
        axes=(1, 2),
        reshape=False,
        order=order,
    )
    return turned > 0.5 if array.dtype == bool else turned.astype(array.dtype)


def _turned_spine(spine: Spine, degrees: float, shape: tuple[int, ...]) -> Spine:
    """The column's centres moved as `_turn` moves the image."""
    centre = (np.array(shape[1:], dtype=float) - 1.0) / 2.0
    theta = np.radians(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = (spine.center - centre) @ rotation.T + centre
    return replace(spine, center=moved)


def _water_image(volume: Volume) -> bool:
    """Whether the series is the water image of a Dixon acquisition (routing's reading)."""
    if not volume.datasets:
        return False
    from myonode.dicom.dixon_channel import channel

    first = volume.datasets[0]
    found, _evidence = channel(
        [str(v) for v in first.get("ImageType", [])],
        str(first.get("SeriesDescription", "")),
        str(first.get("ProtocolName", "")),
        {},
    )
    return found == "water"


def _plain_note() -> str:
    return "No Dixon fat image: muscle told from fat by signal relative to local fat."


def _empty(volume: Volume, note: str) -> LabelMap:
    return LabelMap(
        labels=np.zeros(volume.shape, dtype=np.uint8), structures={}, notes=[CLASSICAL_NOTE, note]
    )


def _touches_edge(body: np.ndarray) -> bool:
    edges = body[:, :, 0].any() or body[:, :, -1].any()
    return bool(edges and body[:, :, [0, -1]].sum() > 0.02 * body.shape[0] * body.shape[1])


def lumbar_groups(
    likeness: np.ndarray,
    body: np.ndarray,
    spine: Spine,
    psoas_slices: np.ndarray,
    spacing: np.ndarray,
) -> dict[str, np.ndarray]:
    """Paraspinal (split into multifidus and erector spinae) wherever the column is known;
    psoas and quadratus lumborum on the slices where the column was found from the psoas."""
    smooth = smooth_in_plane(likeness, 1.0, spacing)
    fat = (smooth >= MUSCLE_BELOW) & body
    _band, depth = wall_band(~fat & body, body, fat, spacing)
    vertebra = vertebral_bodies(body.shape, spine, spacing)
    # Paraspinal muscles often carry fatty streaks, so they are grown through moderately
    # fat-like tissue; psoas and quadratus lie in retroperitoneal fat of intermediate
    # signal and are grown through clearly dark tissue only.
    masks = posterior_groups(
        ~fat & body,
        (smooth < DEEP_MUSCLE_BELOW) & body,
        depth,
        vertebra,
        spine,
        spacing,
        psoas_slices,
    )
    del masks["other"]  # bulges beside the paraspinals: not reported on MR
    beneath = np.nan_to_num(depth, nan=-1.0) >= 0.0
    paraspinals: dict[str, np.ndarray] = {}
    for side in SIDES:
        # The hull must not take the quadratus or psoas lying against the compartment.
        outside = ~masks[f"quadratus_lumborum_{side}"] & ~masks[f"psoas_{side}"]
        paraspinal = compartment(
            masks.pop(f"erector_spinae_{side}"), smooth < DEEP_MUSCLE_BELOW, beneath & outside
        )
        # The spinous process with its interspinous and supraspinous ligaments fills the
        # midline between the two multifidi; on T2 it is as dark as muscle, so its half
        # width is kept free by anatomy. So is the vertebral arch in front of the laminae:
        # the pedicles run `ARCH_DEPTH_MM` back from the body and the spinal canal between
        # them is about as wide as the body; CSF, ligamentum flavum and cortex may all be
        # as dark as muscle. Beyond the roots of the transverse processes the front of the
        # erector follows the processes and the middle layer of the thoracolumbar fascia,
        # which run laterally and backwards (`FRONT_SLOPE`); without a fat plane there the
        # quadratus lumborum and intertransversarii are as dark as the erector.
        for k in np.nonzero(spine.present)[0]:
            frame = SliceFrame.at(body.shape[1:], spine, k, spacing)
            lateral = frame.toward(side)
            r = frame.radius
            arch = (lateral <= ARCH_HALF_WIDTH * r) & (frame.forward > -r - ARCH_DEPTH_MM)
            beyond = np.clip(lateral - r - PROCESS_ROOT_MM, 0.0, None)
            front = frame.forward <= -r - 5.0 - FRONT_SLOPE * beyond
            paraspinal[k] &= (lateral >= SPINOUS_HALF_WIDTH_MM) & ~arch & front
        paraspinals[side] = paraspinal
    for side, (multifidus, erector) in split_paraspinal(
        paraspinals, smooth, spine, spacing
    ).items():
        masks[f"multifidus_{side}"], masks[f"erector_spinae_{side}"] = multifidus, erector
    return masks


def compartment(paraspinal: np.ndarray, dark: np.ndarray, beneath: np.ndarray) -> np.ndarray:
    """The paraspinal muscles of one side as their compartment: the convex hull, per
    slice, of their dark (fat-free) part, beneath the subcutaneous fat.

    Erector spinae and multifidus fill the osteofascial compartment between the vertebral
    arch and the thoracolumbar fascia, which is convex in section. Their fatty
    infiltration (streaks, and whole fatty regions deep in the lower lumbar multifidus)
    lies inside it and belongs to the muscle, as in the references and in fat-infiltration
    grading; the dark part alone would leave it out."""
    out = np.zeros_like(paraspinal)
    for k in np.nonzero(paraspinal.any(axis=(1, 2)))[0]:
        core = paraspinal[k] & dark[k]
        out[k] = (convex_hull_image(core) if core.any() else paraspinal[k]) & beneath[k]
    return out


def vertebral_bodies(shape: tuple[int, ...], spine: Spine, spacing: np.ndarray) -> np.ndarray:
    """The vertebral body as an ellipse between the psoas muscles (radius r across, 1.2 r
    front to back): on T2 marrow is as dark as muscle, so it must be excluded by anatomy."""
    out = np.zeros(shape, dtype=bool)
    for k in np.nonzero(spine.present)[0]:
        frame = SliceFrame.at(shape[1:], spine, k, spacing)
        r = frame.radius
        out[k] = (frame.lateral / r) ** 2 + (frame.forward / (1.2 * r)) ** 2 <= 1.0
    return out


def split_paraspinal(
    paraspinals: dict[str, np.ndarray], smooth: np.ndarray, spine: Spine, spacing: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per side, multifidus (medial, against the spinous process and lamina) and erector
    spinae (lateral), divided along the fatty septum between them by a watershed on
    fat-likeness.

    On one slice the septum can be faint, and a fat streak inside either muscle then
    stops the flooding instead: the border jumps by 10-20 mm between neighbouring slices.
    The multifidus narrows steadily from the sacrum upwards and the two are mirror images,
    so a first watershed from broad markers gives each slice's and side's border
    (`SEPTUM_QUANTILE` of the multifidus' lateral reach), the median over both sides and
    the slices within `SEPTUM_REACH_MM` replaces it, and a second watershed seeks the
    septum within `SEPTUM_BAND_MM` of that border."""
    spacing_ji = (float(spacing[1]), float(spacing[2]))
    borders = []
    slices: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for side, paraspinal in paraspinals.items():
        border = np.full(len(paraspinal), np.nan)
        for k in np.nonzero(paraspinal.any(axis=(1, 2)))[0]:
            lateral = SliceFrame.at(paraspinal.shape[1:], spine, k, spacing).toward(side)
            mask = paraspinal[k]
            landscape = ndimage.grey_dilation(smooth[k], footprint=disk(1.0, spacing_ji))
            slices[(side, int(k))] = (lateral, mask, landscape)
            extent = float(lateral[mask].max())
            basins = _watershed_between(
                mask, landscape, lateral, min(15.0, 0.3 * extent), 0.65 * extent
            )
            if basins is not None and (basins == 1).any():
                border[k] = np.percentile(lateral[basins == 1], SEPTUM_QUANTILE)
        borders.append(border)
    reach = round(SEPTUM_REACH_MM / float(spacing[0]))
    out = {
        side: (np.zeros_like(paraspinal), np.zeros_like(paraspinal))
        for side, paraspinal in paraspinals.items()
    }
    for (side, k), (lateral, mask, landscape) in slices.items():
        multifidus, erector = out[side]
        near = np.concatenate([b[max(0, k - reach) : k + reach + 1] for b in borders])
        near = near[~np.isnan(near)]
        basins = None
        if len(near):
            typical = float(np.median(near))
            basins = _watershed_between(
                mask, landscape, lateral, typical - SEPTUM_BAND_MM, typical + SEPTUM_BAND_MM
            )
        if basins is None:
            erector[k] = mask
            continue
        multifidus[k] = basins == 1
        erector[k] = basins == 2
    return out


def _watershed_between(
    mask: np.ndarray, landscape: np.ndarray, lateral: np.ndarray, medial: float, outer: float
) -> np.ndarray | None:
    """Watershed of `mask` from markers medial of `medial` mm (1) and lateral of `outer`
    mm (2); None when either marker is empty."""
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[mask & (lateral <= medial)] = 1
    markers[mask & (lateral >= outer)] = 2
    if len(np.unique(markers)) < 3:
        return None
    return watershed(landscape, markers, mask=mask)


ENGINES = {
    "classical-mr": EngineKind(
        create=lambda _argument: ClassicalMrEngine(),
        identify=lambda _argument: EngineIdentity(ClassicalMrEngine.algorithm, "segmentation"),
    )
}

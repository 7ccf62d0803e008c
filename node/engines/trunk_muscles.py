"""Trunk muscles placed by anatomy around the spine and along the body wall (CT and MR).

Each group is placed relative to the vertebral body of its slice (centre, radius) and
bounded by image evidence: a muscle mask from the modality (attenuation on CT, signal on
MR), fat planes, bone. Thin bridges between neighbouring muscles (a fascia without fat, a
vessel) are cut by growing through tissue of muscle thickness only, and bulges that are not
the muscle's own (a kidney against the quadratus, a bowel loop against the wall) are split
off at their neck.

Sides follow the canonical orientation: array index i increases towards the patient's left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .landmarks_ct import Spine
from .morphology import disk, fill_muscle, grow_from, split_bulges, thin_part

SIDES = ("left", "right")


@dataclass
class SliceFrame:
    """Coordinates of one axial slice relative to its vertebral body, in millimetres."""

    forward: np.ndarray  # mm anterior of the vertebral body centre (negative: behind it)
    lateral: np.ndarray  # mm towards the given side from the body centre (per side below)
    radius: float  # vertebral body radius, mm

    @classmethod
    def at(
        cls,
        shape: tuple[int, int],
        spine: Spine,
        k: int,
        spacing: np.ndarray,
        origin: tuple[int, int] = (0, 0),
    ):
        """The frame of slice k for an array of `shape` whose pixel (0, 0) is `origin`."""
        jj, ii = np.mgrid[0 : shape[0], 0 : shape[1]]
        vj, vi = spine.center[k] - np.asarray(origin)
        return cls(
            forward=(vj - jj) * float(spacing[1]),
            lateral=(ii - vi) * float(spacing[2]),
            radius=float(spine.radius_mm[k]),
        )

    def toward(self, side: str) -> np.ndarray:
        """Lateral distance towards `side` (negative on the other side)."""
        return self.lateral if side == "left" else -self.lateral


def _window(
    shape: tuple[int, int], spine: Spine, k: int, spacing: np.ndarray
) -> tuple[slice, slice]:
    """The part of slice k where the posterior groups can lie (speed: work on less)."""
    vj, vi = spine.center[k]
    r = float(spine.radius_mm[k])
    j0 = int(max(0, vj - (1.5 * r + 20.0) / spacing[1]))
    j1 = int(min(shape[0], vj + (r + 120.0) / spacing[1] + 1))
    i0 = int(max(0, vi - (r + 110.0) / spacing[2]))
    i1 = int(min(shape[1], vi + (r + 110.0) / spacing[2] + 1))
    return slice(j0, j1), slice(i0, i1)


def posterior_groups(
    muscle: np.ndarray,
    deep_muscle: np.ndarray,
    depth: np.ndarray,
    bone: np.ndarray,
    spine: Spine,
    spacing: np.ndarray,
    abdominal: np.ndarray,
) -> dict[str, np.ndarray]:
    """Erector spinae (with multifidus), psoas and quadratus lumborum, per side, and the
    other back muscles met on the way ("other").

    `muscle` is the modality's muscle mask for the erector spinae, which is bounded by fat
    and may carry fatty streaks; `deep_muscle` a stricter one for psoas and quadratus,
    which lie against organs and bowel with thin fat planes between. `bone` is what must
    never be muscle (empty where the modality does not show bone apart). `depth` is the
    depth below the outer wall surface (body_wall); voxels above it are skin and
    subcutaneous fat, never muscle.
    Psoas and quadratus lumborum are only sought on `abdominal` slices (below the 12th
    rib): above it the diaphragmatic crura and intercostal muscles sit where they would.
    """
    shape = muscle.shape
    groups = {
        f"{name}_{side}": np.zeros(shape, dtype=bool)
        for name in ("erector_spinae", "psoas", "quadratus_lumborum")
        for side in SIDES
    }
    groups["other"] = np.zeros(shape, dtype=bool)
    spacing_ji = (float(spacing[1]), float(spacing[2]))
    for k in np.nonzero(spine.present)[0]:
        box = _window(shape[1:], spine, k, spacing)
        origin = (box[0].start, box[1].start)
        beneath = np.nan_to_num(depth[k][box], nan=-1.0) >= 0.0
        bone_k = bone[k][box]
        clear = beneath & ~ndimage.binary_dilation(bone_k, disk(1.0, spacing_ji))
        tissue = muscle[k][box] & clear
        deep = deep_muscle[k][box] & clear
        allowed = beneath & ~bone_k
        frame = SliceFrame.at(bone_k.shape, spine, k, spacing, origin)
        r = frame.radius
        for side in SIDES:
            lateral = frame.toward(side)
            # Erector spinae + multifidus: behind the pedicles, beside the spinous process.
            region = (frame.forward <= -r - 5.0) & (lateral > 0) & (lateral <= 100.0)
            seeds = (
                region
                & (frame.forward <= -r)
                & (frame.forward >= -r - 50.0)
                & (lateral >= 8.0)
                & (lateral <= 40.0)
            )
            grown = grow_from(tissue & region, seeds & tissue, 4.0, spacing_ji)
            # Bulges of the erector: beside the spine, or further out but deep (the
            # iliocostalis); a lateral bulge just under the fat is latissimus or serratus.
            deep_enough = np.nan_to_num(depth[k][box], nan=0.0) >= 15.0
            own = region & ((lateral <= 55.0) | (deep_enough & (lateral <= 75.0)))
            own &= frame.forward >= -r - 60.0
            es = fill_muscle(split_bulges(grown, own, spacing_ji), allowed & region, spacing_ji)
            groups[f"erector_spinae_{side}"][k][box] = es
            # The other bulges are back muscles too, behind the transverse processes where
            # no organ lies.
            groups["other"][k][box] |= grown & ~es & (frame.forward <= -r - 15.0)
            if not abdominal[k]:
                continue
            # Psoas: beside the vertebral body, in front of the transverse process; the
            # diaphragmatic crura lie further forward, against the front of the body.
            region = (
                (frame.forward <= 2.0 * r)
                & (frame.forward >= -r - 10.0)
                & (lateral >= 0.6 * r)
                & (lateral <= r + 60.0)
                & ~es
            )
            body_side = np.hypot(frame.forward, frame.lateral) <= r + 12.0
            seeds = (
                region
                & body_side
                & (frame.forward <= 0.2 * r)
                & (frame.forward >= -0.8 * r)
                & (lateral >= 0.9 * r)
            )
            ps = grow_from(deep & region, seeds & deep, 2.5, spacing_ji)
            # A kidney or bowel loop joined to the psoas is a bulge of its own, centred
            # far from the vertebral body.
            ps = split_bulges(ps, (lateral <= r + 35.0) & (frame.forward <= 0.8 * r), spacing_ji)
            ps = fill_muscle(ps, allowed & region, spacing_ji)
            groups[f"psoas_{side}"][k][box] = ps
            # Quadratus lumborum: lateral to the transverse process, in front of the erector.
            region = (
                (frame.forward <= 0.5 * r)
                & (frame.forward >= -r - 40.0)
                & (lateral >= r + 10.0)
                & (lateral <= r + 100.0)
                & ~es
                & ~ps
            )
            touching = ndimage.binary_dilation(es | ps, disk(4.0, spacing_ji))
            ql = grow_from(deep & region, touching & deep & region, 2.5, spacing_ji)
            # The quadratus is a flat muscle; a thick bulge in its place is the kidney.
            near_back = ndimage.distance_transform_edt(~(es | ps), sampling=spacing_ji) <= 25.0
            ql = split_bulges(ql, thin_part(ql, 12.0, spacing_ji) & near_back, spacing_ji)
            groups[f"quadratus_lumborum_{side}"][k][box] = fill_muscle(
                ql, allowed & region, spacing_ji
            )
    return groups


def cut_sides(body_slice: np.ndarray) -> set[str]:
    """The patient's sides where the body runs into the image's side edge (canonical
    orientation: column 0 is the patient's right)."""
    cut = set()
    if body_slice[:, 0].sum() >= 3:
        cut.add("right")
    if body_slice[:, -1].sum() >= 3:
        cut.add("left")
    return cut


def _split_anterior_wall(
    muscle: np.ndarray, anterior: np.ndarray, center_i: float, half_width_mm: float, si: float
) -> tuple[float, float, float]:
    """Lateral positions (mm from the trunk centre, + towards the left) of the linea alba
    and of the left and right linea semilunaris: where the anterior wall is thinnest.

    The rectus sheath is thick beside the midline; at its lateral border the wall turns
    into the aponeuroses of the flat muscles, a thinner seam before the three layers."""
    columns = muscle & anterior
    thickness = columns.sum(axis=0).astype(float)
    x = (np.arange(muscle.shape[1]) - center_i) * si
    smooth = ndimage.uniform_filter1d(thickness, max(1, round(6.0 / si)))

    def thinnest(lo: float, hi: float) -> float:
        window = (x >= lo) & (x <= hi)
        if not window.any():
            return float("nan")
        return float(x[window][np.argmin(smooth[window])])

    alba = thinnest(-25.0, 25.0)
    left = thinnest(alba + 0.15 * half_width_mm, alba + 0.6 * half_width_mm)
    right = thinnest(alba - 0.6 * half_width_mm, alba - 0.15 * half_width_mm)
    return alba, left, right


def wall_groups(
    band_muscle: np.ndarray,
    body: np.ndarray,
    depth: np.ndarray,
    posterior: dict[str, np.ndarray],
    spacing: np.ndarray,
) -> dict[str, np.ndarray]:
    """Rectus abdominis and lateral abdominals (per side) in the muscular wall band.

    Rectus: the anterior wall between the linea alba and the linea semilunaris. Lateral
    abdominals: the wall from there round to the lateral edge of the erector spinae and
    quadratus lumborum. The rest of the wall (latissimus dorsi, serratus, intercostals,
    trapezius) is returned as "other".
    """
    shape = band_muscle.shape
    out = {
        f"{name}_{side}": np.zeros(shape, dtype=bool)
        for name in ("rectus_abdominis", "lateral_abdominals")
        for side in SIDES
    }
    out["other"] = np.zeros(shape, dtype=bool)
    sj, si = float(spacing[1]), float(spacing[2])
    jj, ii = np.mgrid[0 : shape[1], 0 : shape[2]]
    back = np.zeros(shape, dtype=bool)
    for name, mask in posterior.items():
        if not name.startswith("psoas"):
            back |= mask
    for k in range(shape[0]):
        if not band_muscle[k].any():
            continue
        cj, ci = ndimage.center_of_mass(body[k])
        # The abdominal wall muscles are sheets; a thick bulge in the front of the band is
        # an organ or a bowel loop lying against the wall.
        front = band_muscle[k] & (jj < cj)
        sheets = split_bulges(front, thin_part(front, 10.0, (sj, si)), (sj, si))
        wall = (band_muscle[k] & (jj >= cj)) | sheets
        cols = np.nonzero(body[k].any(axis=0))[0]
        half_width = (cols.max() - cols.min() + 1) * si / 2.0
        anterior = jj < cj
        alba, left_edge, right_edge = _split_anterior_wall(wall, anterior, ci, half_width, si)
        x = (ii - ci) * si
        # Angle from straight ahead (0) round to straight back (180 degrees), per side.
        angle = np.degrees(np.arctan2(np.abs(x), (cj - jj) * sj))
        for side, edge in (("left", left_edge), ("right", right_edge)):
            if side in cut_sides(body[k]):
                continue  # the field of view cuts this side: its wall is not whole
            on_side = x > alba if side == "left" else x <= alba
            limit = 180.0
            # The flat muscles end where the back muscles reach the wall surface.
            back_side = back[k] & on_side & (np.nan_to_num(depth[k], nan=99.0) <= 20.0)
            if back_side.any():
                limit = float(angle[back_side].min())
            muscle = wall & on_side
            if np.isnan(edge):
                continue
            medial = x <= edge if side == "left" else x >= edge
            rectus = muscle & anterior & medial
            out[f"rectus_abdominis_{side}"][k] = rectus
            out[f"lateral_abdominals_{side}"][k] = muscle & ~rectus & (angle < limit)
        named = np.zeros_like(wall)
        for key, mask in out.items():
            if key != "other":
                named |= mask[k]
        out["other"][k] = wall & ~named
    return out

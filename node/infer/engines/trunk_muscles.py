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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from myonode.infer.engines.landmarks_ct import Spine
from myonode.infer.engines.morphology import disk, fill_muscle, grow_from, split_bulges, thin_part
from myonode.infer.engines.psoas import psoas_along_z

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
        """The frame of slice k for an array of `shape` whose pixel (0, 0) is `origin`,
        turned with the patient's roll where the spine gives one (`Spine.roll`)."""
        jj, ii = np.mgrid[0 : shape[0], 0 : shape[1]]
        vj, vi = spine.center[k] - np.asarray(origin)
        dj, di = (jj - vj) * float(spacing[1]), (ii - vi) * float(spacing[2])
        roll = 0.0 if spine.roll is None else float(np.radians(spine.roll[k]))
        if roll == 0.0:
            return cls(forward=-dj, lateral=di, radius=float(spine.radius_mm[k]))
        cos, sin = np.cos(roll), np.sin(roll)
        return cls(
            forward=-(dj * cos + di * sin),
            lateral=di * cos - dj * sin,
            radius=float(spine.radius_mm[k]),
        )

    def toward(self, side: str) -> np.ndarray:
        """Lateral distance towards `side` (negative on the other side)."""
        return self.lateral if side == "left" else -self.lateral


FLOOR_BIN_MM = 2.0
FLOOR_REACH_MM = 120.0
GUTTER_MM = 10.0  # the transversospinalis layer on the laminae (rotatores, deep multifidus)


def posterior_floor(
    bone: np.ndarray, spine: Spine, spacing: np.ndarray, ilium: np.ndarray | None = None
) -> np.ndarray:
    """Per slice, side and lateral position, how far forward (mm, as `SliceFrame.forward`)
    the back muscles may reach: the back surface of the posterior vertebral elements.

    Erector spinae and multifidus lie behind the laminae, the transverse processes and the
    ribs; the spinal canal, the intertransverse spaces, quadratus lumborum and psoas lie in
    front of them. In each column beside the spine the most posterior bone is that surface.
    Columns without bone on a slice (discs, interlaminar spaces) take it from the slices
    above and below; beyond the tip of the transverse process the surface goes on in the
    plane of the tip (the middle layer of the thoracolumbar fascia). The erector lies
    medial to the `ilium` (its posterior spines and crest): lateral to it the floor is
    -inf, closed to the back muscles. Returns an array (nk, 2, bins) indexed by `SIDES`
    and lateral bin (`FLOOR_BIN_MM`); NaN where unknown.
    """
    nk = bone.shape[0]
    bins = int(FLOOR_REACH_MM / FLOOR_BIN_MM)
    floor = np.full((nk, len(SIDES), bins), np.nan)
    for k in np.nonzero(spine.present)[0]:
        frame = SliceFrame.at(bone.shape[1:], spine, k, spacing)
        behind = bone[k] & (frame.forward <= 0.0) & (frame.forward >= -frame.radius - 70.0)
        for s, side in enumerate(SIDES):
            lateral = frame.toward(side)
            on_side = behind & (lateral >= 0.0) & (lateral < FLOOR_REACH_MM)
            b = (lateral[on_side] / FLOOR_BIN_MM).astype(int)
            np.fmin.at(floor[k, s], b, frame.forward[on_side])
    ks = np.nonzero(spine.present)[0]
    for s in range(len(SIDES)):
        for b in range(bins):
            known = ks[~np.isnan(floor[ks, s, b])]
            if len(known):
                floor[ks, s, b] = np.interp(ks, known, floor[known, s, b])
        for k in ks:
            row = floor[k, s]
            known = np.nonzero(~np.isnan(row))[0]
            if len(known):
                row[known.max() + 1 :] = row[known.max()]
    if ilium is not None:
        for k in np.nonzero(spine.present & ilium.any(axis=(1, 2)))[0]:
            frame = SliceFrame.at(bone.shape[1:], spine, k, spacing)
            for s, side in enumerate(SIDES):
                lateral = frame.toward(side)[ilium[k]]
                lateral = lateral[lateral > 0.0]
                if len(lateral):
                    floor[k, s, int(lateral.min() / FLOOR_BIN_MM) :] = -np.inf
    return floor


def floor_map(floor: np.ndarray, lateral: np.ndarray) -> np.ndarray:
    """One side's floor (lateral bins) looked up at every pixel; +inf where unknown."""
    b = np.clip((lateral / FLOOR_BIN_MM).astype(int), 0, len(floor) - 1)
    return np.where(np.isnan(floor[b]) | (lateral < 0), np.inf, floor[b])


def _erector_bulges(
    grown: np.ndarray,
    lateral: np.ndarray,
    depth: np.ndarray,
    bounded: bool,
    behind: np.ndarray,
    spacing_ji: tuple[float, float],
) -> np.ndarray:
    """Where the top of a bulge of back muscle makes it part of the erector spinae.

    Beside the spine every bulge is erector or multifidus. Further out, the iliocostalis
    is thick and lies under other muscle, while latissimus dorsi and serratus posterior
    are sheets just under the fat. When the posterior elements bound the erector in front
    (`bounded`), the quadratus lumborum cannot pass for a thick lateral bulge and the
    iliocostalis is followed as far as it goes; otherwise only up to 75 mm out, and only
    `behind` the plane of the transverse processes: the quadratus lumborum lies in that
    plane lateral to their tips, flat against the front of the erector.
    """
    depth = np.nan_to_num(depth, nan=0.0)
    thick = ndimage.distance_transform_edt(grown, sampling=spacing_ji) >= 8.0
    if bounded:
        return (lateral <= 55.0) | ((depth >= 10.0) & thick)
    return (lateral <= 55.0) | ((depth >= 15.0) & (lateral <= 75.0) & thick & behind)


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


@dataclass
class _Window:
    """One slice's part where the posterior groups can lie, with the masks cut to it."""

    box: tuple[slice, slice]
    frame: SliceFrame
    tissue: np.ndarray  # erector muscle mask, clear of bone
    deep: np.ndarray  # psoas and quadratus muscle mask, clear of bone
    allowed: np.ndarray  # beneath the outer wall surface, not bone
    bone_rim: np.ndarray  # bone and the voxels touching it
    bone_mm: np.ndarray  # distance to the nearest bone, mm
    depth: np.ndarray
    under_sheet: np.ndarray


def _erector(
    w: _Window, side: str, floor: np.ndarray | None, spacing_ji: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Erector spinae + multifidus of one side (behind the pedicles and the posterior
    elements, beside the spinous process, beneath the fascial sheet), and the other back
    muscle bulges met on the way, behind the transverse processes where no organ lies."""
    frame, r = w.frame, w.frame.radius
    lateral = frame.toward(side)
    region = (frame.forward <= -r - 5.0) & (lateral > 0) & (lateral <= 100.0)
    if floor is not None:
        region &= frame.forward <= floor_map(floor, lateral)
    seeds = (
        region
        & (frame.forward <= -r)
        & (frame.forward >= -r - 50.0)
        & (lateral >= 8.0)
        & (lateral <= 40.0)
    )
    grown = grow_from(w.tissue & region, seeds & w.tissue, 4.0, spacing_ji)
    # The transverse processes lie about 20 mm behind the back of the vertebral body.
    behind = frame.forward <= -r - 20.0
    own = region & _erector_bulges(grown, lateral, w.depth, floor is not None, behind, spacing_ji)
    own &= frame.forward >= -r - 60.0
    es = fill_muscle(split_bulges(grown, own, spacing_ji), w.allowed & region, spacing_ji)
    es &= w.under_sheet
    if floor is not None:
        # The transversospinalis (rotatores, deep multifidus) lies on the laminae and
        # the spinous process, thin and streaked with fat, so that growth of muscle
        # thickness stops short of the bone. Where the modality shows the posterior
        # elements, tissue within that layer of them that touches the erector is grown
        # on with a finer radius.
        gutter = w.tissue & region & w.under_sheet & (w.bone_mm <= GUTTER_MM)
        es |= grow_from(gutter | es, es, 1.5, spacing_ji) & gutter
    # A voxel touching the posterior elements straddles the bone surface (cortex,
    # periosteum, the tendinous attachments of multifidus and rotatores): not muscle.
    es &= ~w.bone_rim
    return es, grown & ~es & (frame.forward <= -r - 15.0)


def _psoas(
    w: _Window, side: str, erector: np.ndarray, spacing_ji: tuple[float, float]
) -> np.ndarray:
    """Psoas of one side on one slice: beside the vertebral body, in front of the
    transverse process (whose front lies about 5 mm behind the back of the body; behind
    it, lateral to the process, is the quadratus lumborum); the diaphragmatic crura lie
    further forward, against the front of the body (and are told apart along z,
    `psoas.psoas_along_z`)."""
    frame, r = w.frame, w.frame.radius
    lateral = frame.toward(side)
    region = (
        (frame.forward <= 2.0 * r)
        & (frame.forward >= -r - 5.0)
        & (lateral >= 0.6 * r)
        & (lateral <= r + 60.0)
        & ~erector
    )
    body_side = np.hypot(frame.forward, frame.lateral) <= r + 12.0
    seeds = (
        region
        & body_side
        & (frame.forward <= 0.2 * r)
        & (frame.forward >= -0.8 * r)
        & (lateral >= 0.9 * r)
    )
    ps = grow_from(w.deep & region, seeds & w.deep, 2.5, spacing_ji)
    # A kidney or bowel loop joined to the psoas is a bulge of its own, centred far from
    # the vertebral body.
    ps = split_bulges(ps, (lateral <= r + 35.0) & (frame.forward <= 0.8 * r), spacing_ji)
    return fill_muscle(ps, w.allowed & region, spacing_ji)


def _quadratus(
    w: _Window,
    side: str,
    erector: np.ndarray,
    psoas: np.ndarray,
    spacing_ji: tuple[float, float],
    floor: np.ndarray | None = None,
) -> np.ndarray:
    """Quadratus lumborum of one side on one slice: lateral to the transverse process,
    in front of the erector, touching it or the psoas. Where the posterior elements are
    shown (`floor`), it lies in front of the plane of the transverse processes (the
    middle layer of the thoracolumbar fascia); behind it is the erector's iliocostalis."""
    frame, r = w.frame, w.frame.radius
    lateral = frame.toward(side)
    region = (
        (frame.forward <= 0.5 * r)
        & (frame.forward >= -r - 40.0)
        & (lateral >= r + 10.0)
        & (lateral <= r + 100.0)
        & ~erector
        & ~psoas
    )
    if floor is not None:
        region &= frame.forward >= floor_map(floor, lateral)
    touching = ndimage.binary_dilation(erector | psoas, disk(4.0, spacing_ji))
    ql = grow_from(w.deep & region, touching & w.deep & region, 2.5, spacing_ji)
    # The quadratus is a flat muscle; a thick bulge in its place is the kidney.
    near_back = ndimage.distance_transform_edt(~(erector | psoas), sampling=spacing_ji) <= 25.0
    ql = split_bulges(ql, thin_part(ql, 12.0, spacing_ji) & near_back, spacing_ji)
    return fill_muscle(ql, w.allowed & region, spacing_ji)


def _along_z(mask: np.ndarray, muscle: np.ndarray, windows: dict[int, _Window]) -> np.ndarray:
    """One side's erector spinae or psoas made consistent from slice to slice.

    The erector spinae with the multifidus and the psoas run along the lumbar column, so
    their section changes little from one slice to the next. On a slice with both
    neighbours, `muscle` tissue that belongs to the muscle on the slices above and below
    belongs to it here too (a fat streak or a thin fascia stopped the growth on this slice
    alone), and what belongs to it on neither of them is an outgrowth of this slice alone
    (a bridge into a neighbouring muscle, a fascia, a vessel, the crus) and does not."""
    out = mask.copy()
    for k, w in windows.items():
        if k - 1 not in windows or k + 1 not in windows:
            continue
        above, below = mask[k + 1][w.box], mask[k - 1][w.box]
        tissue = muscle[k][w.box] & w.allowed & w.under_sheet & ~w.bone_rim
        out[k][w.box] = (mask[k][w.box] | (above & below & tissue)) & (above | below)
    return out


def posterior_groups(
    muscle: np.ndarray,
    deep_muscle: np.ndarray,
    depth: np.ndarray,
    bone: np.ndarray,
    spine: Spine,
    spacing: np.ndarray,
    abdominal: np.ndarray,
    floor: np.ndarray | None = None,
    sheet_mm: float = 0.0,
    psoas_z: Callable[[np.ndarray, str], np.ndarray] | None = None,
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
    The psoas is followed along z before the quadratus is placed beside it, by
    `psoas_z(mask, side)` where the modality gives one (else `psoas.psoas_along_z`).
    `floor` (`posterior_floor`), where the modality shows the posterior vertebral elements,
    bounds the erector in front; the outer `sheet_mm` beneath the subcutaneous fat is the
    posterior layer of the thoracolumbar fascia with the aponeuroses on it, not erector.
    """
    shape = muscle.shape
    groups = {
        f"{name}_{side}": np.zeros(shape, dtype=bool)
        for name in ("erector_spinae", "psoas", "quadratus_lumborum")
        for side in SIDES
    }
    groups["other"] = np.zeros(shape, dtype=bool)
    spacing_ji = (float(spacing[1]), float(spacing[2]))
    windows: dict[int, _Window] = {}
    for k in np.nonzero(spine.present)[0]:
        box = _window(shape[1:], spine, k, spacing)
        beneath = np.nan_to_num(depth[k][box], nan=-1.0) >= 0.0
        bone_k = bone[k][box]
        clear = beneath & ~ndimage.binary_dilation(bone_k, disk(1.0, spacing_ji))
        w = windows[k] = _Window(
            box=box,
            frame=SliceFrame.at(bone_k.shape, spine, k, spacing, (box[0].start, box[1].start)),
            tissue=muscle[k][box] & clear,
            deep=deep_muscle[k][box] & clear,
            allowed=beneath & ~bone_k,
            bone_rim=ndimage.binary_dilation(bone_k, np.ones((3, 3), dtype=bool)),
            bone_mm=(
                ndimage.distance_transform_edt(~bone_k, sampling=spacing_ji)
                if bone_k.any()
                else np.full(bone_k.shape, np.inf)
            ),
            depth=depth[k][box],
            under_sheet=np.nan_to_num(depth[k][box], nan=-1.0) >= sheet_mm,
        )
        for s, side in enumerate(SIDES):
            es, other = _erector(w, side, None if floor is None else floor[k, s], spacing_ji)
            groups[f"erector_spinae_{side}"][k][box] = es
            groups["other"][k][box] |= other
            if abdominal[k]:
                groups[f"psoas_{side}"][k][box] = _psoas(w, side, es, spacing_ji)
    for side in SIDES:
        raw = groups[f"psoas_{side}"]
        groups[f"psoas_{side}"] = (
            psoas_along_z(raw, spacing) if psoas_z is None else psoas_z(raw, side)
        )
        erector = groups[f"erector_spinae_{side}"] = _along_z(
            groups[f"erector_spinae_{side}"], muscle, windows
        )
        groups[f"psoas_{side}"] = _along_z(groups[f"psoas_{side}"], deep_muscle, windows) & ~erector
    for k, w in windows.items():
        if not abdominal[k]:
            continue
        for side in SIDES:
            es = groups[f"erector_spinae_{side}"][k][w.box]
            ps = groups[f"psoas_{side}"][k][w.box]
            groups[f"quadratus_lumborum_{side}"][k][w.box] = _quadratus(
                w, side, es, ps, spacing_ji, None if floor is None else floor[k, SIDES.index(side)]
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

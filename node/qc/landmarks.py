"""The patient's own landmarks, found by QC in the image itself, independently of the engine.

CT: the body (tissue above −400 HU), bone (≥ 200 HU), the vertebral column per slice (the
bone near the body's left-right centre, up to `COLUMN_DEPTH_MM` in front of its most
posterior point: spinous process, arch and vertebral body; an enhanced aorta lies further
forward) and the pelvis (bone on both sides, more than `PELVIS_LATERAL_MM` from the midline:
ilium, sacral alae, femoral heads). MR has no absolute scale, so only the body outline is
found (foreground above a fraction of the bright signal): its left-right centre serves as
the midline and its centroid as the front/back divide.

Positions are patient coordinates in mm (LPS: x grows to the patient's left, y to the back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from myonode.core.volume import Geometry

BODY_HU = -400.0
BONE_HU = 200.0
CENTRAL_BAND_MM = 40.0  # half-width, either side of the body's centre, searched for the spine
COLUMN_DEPTH_MM = 65.0  # from the spinous process forward to the front of the vertebral body
PELVIS_LATERAL_MM = 40.0
PELVIS_BONE_MM2 = 100.0  # bone on each side at a pelvic level
PELVIS_PIECE_MM2 = 300.0  # one piece of at least this much on each side: a pelvic bone
MIN_COLUMN_AREA_MM2 = 150.0  # less bone than this near the centre is not a vertebra
MR_FOREGROUND = 0.1  # of the 99th percentile of the signal


@dataclass
class Landmarks:
    """Per-slice landmarks (NaN or False where not found) and the coordinate planes.

    `x`/`y` give each in-plane pixel's patient position (the slices are axial); `column` is
    the vertebral column's bone per voxel (CT only); `body_y` the body's front/back centre.
    """

    x: np.ndarray
    y: np.ndarray
    midline_x: np.ndarray
    body_y: np.ndarray
    column_y: np.ndarray
    column: np.ndarray | None
    pelvis: np.ndarray
    source: str

    @property
    def column_slices(self) -> int:
        return int(np.isfinite(self.column_y).sum())


def plane_coordinates(geometry: Geometry, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Patient x and y (mm) of every pixel of an axial slice, as [j, i] arrays."""
    _nk, nj, ni = shape
    jj, ii = np.mgrid[0:nj, 0:ni]
    lps = geometry.index_to_lps(np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1))
    return lps[:, 0].reshape(nj, ni), lps[:, 1].reshape(nj, ni)


def _largest(mask: np.ndarray) -> np.ndarray:
    labelled, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, labelled, range(1, count + 1))
    return labelled == int(np.argmax(sizes)) + 1


def _centroid(mask: np.ndarray, plane: np.ndarray) -> float:
    return float(plane[mask].mean()) if mask.any() else float("nan")


def ct_landmarks(hu: np.ndarray, geometry: Geometry) -> Landmarks:
    """Body, vertebral column and pelvis from the Hounsfield units of an axial CT."""
    x, y = plane_coordinates(geometry, hu.shape)
    pixel_mm2 = float(geometry.spacing[0] * geometry.spacing[1])
    nk = hu.shape[0]
    midline = np.full(nk, np.nan)
    body_y = np.full(nk, np.nan)
    column_y = np.full(nk, np.nan)
    column = np.zeros(hu.shape, dtype=bool)
    centre = np.full(nk, np.nan)
    bones = []
    for k in range(nk):
        body = _largest(hu[k] > BODY_HU)
        bone = body & (hu[k] >= BONE_HU)
        bones.append(bone)
        if not body.any():
            continue
        centre[k], body_y[k] = _centroid(body, x), _centroid(body, y)
        central = bone & (np.abs(x - centre[k]) < CENTRAL_BAND_MM)
        if central.sum() * pixel_mm2 < MIN_COLUMN_AREA_MM2:
            continue
        back = float(y[central].max())
        spine = central & (y > back - COLUMN_DEPTH_MM)
        if spine.sum() * pixel_mm2 < MIN_COLUMN_AREA_MM2:
            continue
        column[k] = spine
        midline[k] = _centroid(spine & (y > back - COLUMN_DEPTH_MM / 2), x)
        column_y[k] = _centroid(spine, y)
    midline = _fill(midline) if np.isfinite(midline).any() else _fill(centre)
    pelvis = _pelvis(bones, x, midline, pixel_mm2)
    return Landmarks(x, y, midline, body_y, column_y, column, pelvis, "CT bone")


def _pelvis(
    bones: list[np.ndarray], x: np.ndarray, midline: np.ndarray, pixel_mm2: float
) -> np.ndarray:
    """Slices at the levels of the pelvis: runs of slices with bone on both sides away from
    the midline that hold at least one slice with a large piece of bone on each side (ilium,
    acetabulum, femoral head; a rib's cross-section is smaller), so the lower ribs, which a
    gap of slices separates from the iliac crests, do not count."""
    nk = len(bones)
    some = np.zeros(nk, dtype=bool)
    large = np.zeros(nk, dtype=bool)
    for k, bone in enumerate(bones):
        if not np.isfinite(midline[k]):
            continue
        pieces = []
        for side in (x > midline[k] + PELVIS_LATERAL_MM, x < midline[k] - PELVIS_LATERAL_MM):
            lateral = bone & side
            labelled, count = ndimage.label(lateral)
            sizes = ndimage.sum_labels(lateral, labelled, range(1, count + 1)) if count else [0]
            pieces.append((float(np.sum(sizes)) * pixel_mm2, float(np.max(sizes)) * pixel_mm2))
        some[k] = min(p[0] for p in pieces) >= PELVIS_BONE_MM2
        large[k] = min(p[1] for p in pieces) >= PELVIS_PIECE_MM2
    runs, count = ndimage.label(some)
    keep = np.unique(runs[large & some])
    return np.isin(runs, keep[keep > 0])


def mr_landmarks(signal: np.ndarray, geometry: Geometry) -> Landmarks:
    """The body outline of an axial MR: midline and front/back centre per slice."""
    x, y = plane_coordinates(geometry, signal.shape)
    nk = signal.shape[0]
    midline = np.full(nk, np.nan)
    body_y = np.full(nk, np.nan)
    level = float(np.percentile(signal, 99)) * MR_FOREGROUND if signal.size else 0.0
    for k in range(nk):
        body = _largest(ndimage.binary_fill_holes(signal[k] > level))
        if body.sum() > 50:
            midline[k], body_y[k] = _centroid(body, x), _centroid(body, y)
    return Landmarks(
        x,
        y,
        _fill(midline),
        body_y,
        np.full(nk, np.nan),
        None,
        np.zeros(nk, dtype=bool),
        "MR body outline",
    )


def _fill(values: np.ndarray) -> np.ndarray:
    """Slices without a value take the nearest slice's (the midline barely moves)."""
    found = np.flatnonzero(np.isfinite(values))
    if found.size == 0:
        return values
    nearest = found[np.abs(np.arange(values.size)[:, None] - found[None, :]).argmin(axis=1)]
    return values[nearest]

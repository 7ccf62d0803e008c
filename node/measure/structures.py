"""Pure per-structure measurements: label map + geometry (+ intensities) -> numbers.

No I/O here, so every formula is unit-testable against hand-computed values.

Conventions: volume in cm³ (= voxel count × voxel volume), mass in g (volume × 1.06 g/cm³,
seed 000), cross-sectional area (CSA) in cm² per axial slice of the array (= voxel count in
the slice × in-plane pixel area). CSA is reported only when the slices are axial; on a
sagittal or coronal series a "slice area" is not a cross-section of the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import contourpy
import numpy as np
from scipy import ndimage
from scipy.spatial import Delaunay

from myonode.core.volume import Geometry
from myonode.dicom.anatomy import Structure

MUSCLE_DENSITY_G_PER_CM3 = 1.06  # skeletal muscle density used by seed 000
AXIAL_COSINE = 0.95


@dataclass(frozen=True)
class Statistics:
    """Mean and sample standard deviation of a quantity inside a structure."""

    mean: float
    sd: float


@dataclass(frozen=True)
class MaximumArea:
    """The largest axial cross-section of a structure, where it lies, and its outline there
    (see `outline`): what an SR needs to show where the area was measured."""

    area_cm2: float
    slice_index: int
    z_mm: float
    outline: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StructureMeasurements:
    """Everything measured on one labelled structure.

    `attenuation` is in HU (CT only); `fat_fraction` in percent (Dixon: fat / (water + fat)).
    `area_at_l3_cm2` is the CSA on the L3 slice when the engine found it.
    """

    structure: Structure
    label: int
    voxel_count: int
    volume_cm3: float
    mass_g: float
    attenuation: Statistics | None = None
    fat_fraction: Statistics | None = None
    max_area: MaximumArea | None = None
    area_at_l3_cm2: float | None = None


def volume_cm3(voxel_count: int, voxel_volume_mm3: float) -> float:
    return voxel_count * voxel_volume_mm3 / 1000.0


def mass_g(volume: float, density_g_per_cm3: float = MUSCLE_DENSITY_G_PER_CM3) -> float:
    return volume * density_g_per_cm3


def statistics(values: np.ndarray) -> Statistics | None:
    if values.size == 0:
        return None
    values = values.astype(np.float64)
    return Statistics(float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0)


def fat_fraction_percent(water: np.ndarray, fat: np.ndarray) -> np.ndarray:
    """Signal fat fraction fat / (water + fat) in percent; 0 where both signals are 0."""
    water = water.astype(np.float64)
    fat = fat.astype(np.float64)
    total = water + fat
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 100.0 * fat / total, 0.0)


def is_axial(geometry: Geometry) -> bool:
    """Whether the array's slices are axial, i.e. their normal runs along patient z."""
    return abs(float(geometry.directions[2, 2])) >= AXIAL_COSINE


def slice_areas_cm2(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Area of `mask` in each slice k, in cm²."""
    pixel_area_mm2 = float(geometry.spacing[0] * geometry.spacing[1])
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return counts * pixel_area_mm2 / 100.0


def outline(mask2d: np.ndarray) -> np.ndarray:
    """One closed polyline around a 2D region, its separate parts and holes included.

    Image coordinates (column, row) with (0, 0) at the top left corner of the top left pixel,
    as an SR's SCOORD has them. The iso-line at 0.5 of the zero-padded mask runs half-way
    between pixels inside and outside, so every loop closes, also at the image border; loops
    around holes run the other way round. Several loops become one "keyhole" polygon, as RT
    structure sets draw them: bridges, as short as possible (the minimum spanning tree of the
    loops), lead from loop to loop; the line goes round each loop and comes back along each
    bridge, so the bridges enclose no area.
    """
    padded = np.pad(mask2d.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5)
    loops = sorted((np.asarray(line, dtype=np.float64)[:-1] - 0.5 for line in lines), key=len)
    loops.reverse()  # the largest first: the root of the tree; loops are open from here on
    bridges = _bridges(loops)
    path: list[np.ndarray] = []
    stack = [(0, 0, 0)]  # (loop, entry index, steps taken round it)
    while stack:
        loop, entry, step = stack.pop()
        size = len(loops[loop])
        if step == size:  # round: close the loop, go back over the bridge
            path.append(loops[loop][entry])
            if stack:
                parent, parent_entry, parent_step = stack[-1]
                here = (parent_entry + parent_step - 1) % len(loops[parent])
                path.append(loops[parent][here])
            continue
        index = (entry + step) % size
        path.append(loops[loop][index])
        stack.append((loop, entry, step + 1))
        for child, child_entry in reversed(bridges.get((loop, index), [])):
            stack.append((child, child_entry, 0))
    return np.asarray(path)


def _bridges(loops: list[np.ndarray]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """The minimum spanning tree of the loops, rooted at loop 0: (loop, point index) ->
    [(child loop, its entry point index)]. The Euclidean minimum spanning tree is part of
    the Delaunay triangulation, so only its edges are candidates."""
    if len(loops) == 1:
        return {}
    points = np.concatenate(loops)
    owner = np.repeat(np.arange(len(loops)), [len(loop) for loop in loops])
    first = np.concatenate([[0], np.cumsum([len(loop) for loop in loops])])
    simplices = Delaunay(points).simplices
    edges = np.concatenate([simplices[:, [0, 1]], simplices[:, [1, 2]], simplices[:, [2, 0]]])
    edges = edges[owner[edges[:, 0]] != owner[edges[:, 1]]]
    lengths = np.hypot(*(points[edges[:, 0]] - points[edges[:, 1]]).T)
    parent = list(range(len(loops)))

    def root(n: int) -> int:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    tree: dict[int, list[tuple[int, int]]] = {}
    for a, b in edges[np.argsort(lengths, kind="stable")]:
        ra, rb = root(owner[a]), root(owner[b])
        if ra != rb:
            parent[ra] = rb
            tree.setdefault(int(owner[a]), []).append((int(a), int(b)))
            tree.setdefault(int(owner[b]), []).append((int(b), int(a)))
    bridges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    seen, queue = {0}, [0]
    while queue:
        loop = queue.pop()
        for a, b in tree.get(loop, []):
            child = int(owner[b])
            if child not in seen:
                seen.add(child)
                queue.append(child)
                bridges.setdefault((loop, a - int(first[loop])), []).append(
                    (child, b - int(first[child]))
                )
    return bridges


def maximum_area(mask: np.ndarray, geometry: Geometry) -> MaximumArea | None:
    """The slice with the largest cross-section (the most cranial one on ties)."""
    if not is_axial(geometry) or not mask.any():
        return None
    areas = slice_areas_cm2(mask, geometry)
    k = int(np.argmax(areas))
    z = float(geometry.index_to_lps(np.array([0, 0, k]))[0][2])
    return MaximumArea(float(areas[k]), k, z, outline(mask[k]))


def _maximum_area_in_box(
    labels: np.ndarray, label: int, box: tuple[slice, ...], mask: np.ndarray, geometry: Geometry
) -> MaximumArea | None:
    """`maximum_area` of `labels == label`, from its mask inside its bounding box `box`
    (every slice outside the box has no area, so the largest one lies inside)."""
    if not is_axial(geometry) or not mask.any():
        return None
    areas = slice_areas_cm2(mask, geometry)
    k = int(np.argmax(areas)) + box[0].start
    z = float(geometry.index_to_lps(np.array([0, 0, k]))[0][2])
    return MaximumArea(float(areas[k - box[0].start]), k, z, outline(labels[k] == label))


def measure_structures(
    labels: np.ndarray,
    structures: Mapping[int, Structure],
    geometry: Geometry,
    attenuation: np.ndarray | None = None,
    water: np.ndarray | None = None,
    fat: np.ndarray | None = None,
    l3_slice: int | None = None,
) -> list[StructureMeasurements]:
    """Measure every structure in `structures` (empty ones included, with zero volume).

    Pass `attenuation` (HU) for CT, `water` and `fat` for Dixon MR, `l3_slice` when known.
    One pass finds every structure's bounding box; each structure is then measured inside
    its box only (a scanner series has 80 million voxels, a muscle a small part of them).
    """
    voxel_volume = geometry.voxel_volume_mm3
    axial = is_axial(geometry)
    top = max((label for label in structures if label > 0), default=0)
    boxes = ndimage.find_objects(labels, max_label=top) if top else []
    nothing = tuple(slice(0, 0) for _ in labels.shape)
    measured = []
    for label, structure in structures.items():
        box = (boxes[label - 1] if 0 < label <= len(boxes) else None) or nothing
        mask = labels[box] == label
        count = int(np.count_nonzero(mask))
        volume = volume_cm3(count, voxel_volume)
        l3_area = None
        if axial and l3_slice is not None and 0 <= l3_slice < labels.shape[0]:
            l3_area = float(slice_areas_cm2((labels[l3_slice] == label)[np.newaxis], geometry)[0])
        fractions = (
            fat_fraction_percent(water[box], fat[box])[mask]
            if water is not None and fat is not None
            else None
        )
        measured.append(
            StructureMeasurements(
                structure=structure,
                label=label,
                voxel_count=count,
                volume_cm3=volume,
                mass_g=mass_g(volume),
                attenuation=statistics(attenuation[box][mask]) if attenuation is not None else None,
                fat_fraction=statistics(fractions) if fractions is not None else None,
                max_area=_maximum_area_in_box(labels, label, box, mask, geometry),
                area_at_l3_cm2=l3_area,
            )
        )
    return measured

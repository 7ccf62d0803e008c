"""Training and evaluation data: labelled volumes from NIfTI pairs or DICOM series + SEG.

One folder per case under the data directory::

    <data>/<case>/image.nii.gz     the primary image (CT HU, Dixon water, ...)
    <data>/<case>/<role>.nii.gz    further channels a bundle asks for (e.g. fat.nii.gz)
    <data>/<case>/label.nii.gz     labels with the bundle's label values

or, from the archive or the node itself::

    <data>/<case>/image/           the DICOM series (any file names)
    <data>/<case>/<role>/          further channels as DICOM series
    <data>/<case>/seg.dcm          a DICOM SEG of that series (e.g. one the node wrote and a
                                   reader corrected)

SEG segments are matched to the bundle's structures by the node's tracking ID (its structure
key) or else by segmented property type and laterality codes; segments the bundle does not
know are ignored and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from myonode.core.volume import Volume, load_nifti, load_series
from myonode.dicom.anatomy import STRUCTURES, Structure
from myonode.models.bundle import Bundle

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A training or evaluation case cannot be read; the message names the case and why."""


@dataclass
class Case:
    name: str
    volume: Volume
    labels: np.ndarray  # [k, j, i], the bundle's label values
    notes: list[str] = field(default_factory=list)


def _nifti_name(folder: Path, stem: str) -> Path | None:
    for suffix in (".nii.gz", ".nii"):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def _series(folder: Path) -> Volume:
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    if not paths:
        raise DataError(f"{folder} holds no DICOM files")
    return load_series(paths)


def _same_grid(a: Volume, b: Volume, what: str, case: str) -> None:
    if a.shape != b.shape or not np.allclose(a.geometry.affine, b.geometry.affine, atol=1e-3):
        raise DataError(f"case {case}: {what} is not on the image's grid")


def load_case(folder: Path, bundle: Bundle) -> Case:
    """One labelled case in the layout above, with the channels `bundle` needs."""
    name = folder.name
    image_path = _nifti_name(folder, "image")
    if image_path is not None:
        volume = load_nifti(image_path)
        for role in bundle.manifest.input.channels:
            if role == "image":
                continue
            path = _nifti_name(folder, role)
            if path is None:
                raise DataError(f"case {name}: no {role}.nii.gz for channel {role!r}")
            channel = load_nifti(path)
            _same_grid(volume, channel, role, name)
            volume.channels[role] = channel.array
        label_path = _nifti_name(folder, "label")
        if label_path is None:
            raise DataError(f"case {name}: image.nii.gz without label.nii.gz")
        label_volume = load_nifti(label_path)
        _same_grid(volume, label_volume, "label.nii.gz", name)
        labels = np.rint(label_volume.array).astype(np.int64)
        unknown = sorted(set(np.unique(labels).tolist()) - {0, *bundle.manifest.labels})
        if unknown:
            raise DataError(f"case {name}: label values {unknown} are not in the bundle")
        return Case(name, volume, labels.astype(np.uint16))
    if (folder / "image").is_dir() and (folder / "seg.dcm").is_file():
        volume = _series(folder / "image")
        for role in bundle.manifest.input.channels:
            if role != "image":
                channel = _series(folder / role)
                _same_grid(volume, channel, role, name)
                volume.channels[role] = channel.array
        labels, notes = labels_from_seg(folder / "seg.dcm", volume, bundle)
        return Case(name, volume, labels, notes)
    raise DataError(
        f"case {name}: expected image.nii.gz + label.nii.gz, or image/ (DICOM) + seg.dcm"
    )


def load_cases(data_dir: Path, bundle: Bundle) -> list[Case]:
    """Every case folder under `data_dir`, in name order."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir} is not a folder")
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"{data_dir} has no case folders")
    return [load_case(folder, bundle) for folder in folders]


def structure_of_segment(description) -> Structure | None:
    """The node's structure a SEG segment stands for: tracking ID, else codes + laterality."""
    tracking = str(description.get("TrackingID", ""))
    if tracking in STRUCTURES:
        return STRUCTURES[tracking]
    property_type = description.SegmentedPropertyTypeCodeSequence[0]
    modifiers = property_type.get("SegmentedPropertyTypeModifierCodeSequence", [])
    laterality = (
        (str(modifiers[0].CodeValue), str(modifiers[0].CodingSchemeDesignator))
        if (modifiers)
        else None
    )
    for structure in STRUCTURES.values():
        code = structure.property_type
        side = structure.laterality
        if (code.value, code.scheme_designator) != (
            str(property_type.CodeValue),
            str(property_type.CodingSchemeDesignator),
        ):
            continue
        if (None if side is None else (side.value, side.scheme_designator)) == laterality:
            return structure
    return None


def labels_from_seg(path: Path, volume: Volume, bundle: Bundle) -> tuple[np.ndarray, list[str]]:
    """The bundle's label map from a DICOM SEG referencing `volume`'s slices."""
    import highdicom as hd

    seg = hd.seg.segread(path)
    by_key = {spec.key: label for label, spec in bundle.manifest.labels.items()}
    wanted: dict[int, int] = {}
    notes = []
    for description in seg.SegmentSequence:
        structure = structure_of_segment(description)
        number = int(description.SegmentNumber)
        if structure is None or structure.key not in by_key:
            notes.append(
                f"{path}: segment {number} ({description.SegmentLabel}) is not a structure of "
                "this bundle; ignored"
            )
            continue
        wanted[number] = by_key[structure.key]
    if not wanted:
        raise DataError(f"{path}: no segment matches the bundle's structures")
    uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids,
        segment_numbers=sorted(wanted),
        assert_missing_frames_are_empty=True,
    )
    labels = np.zeros(volume.shape, dtype=np.uint16)
    for n, number in enumerate(sorted(wanted)):
        labels[pixels[..., n] > 0] = wanted[number]
    for note in notes:
        log.info(note)
    return labels, notes


def write_case(folder: Path, volume: Volume, labels: np.ndarray) -> None:
    """Write one case in the NIfTI layout `load_case` reads."""
    from myonode.core.volume import save_nifti

    folder.mkdir(parents=True, exist_ok=True)
    save_nifti(volume.array, volume.geometry, folder / "image.nii.gz")
    for role, array in volume.channels.items():
        save_nifti(array, volume.geometry, folder / f"{role}.nii.gz")
    save_nifti(labels.astype(np.uint16), volume.geometry, folder / "label.nii.gz")

"""DICOM Segmentation (PS3.3 A.51) from a label map, via highdicom.

BINARY segmentation type: one segment per structure, frames only where a segment is present.
BINARY (SOP class 1.2.840.10008.5.1.4.1.1.66.4) rather than LABELMAP because Orthanc 1.10
refuses the Label Map SOP class over C-STORE.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from myonode.core.quality import QualityReport
from myonode.core.types import Algorithm, LabelMap
from myonode.core.volume import Volume
from myonode.dicom.anatomy import Structure
from myonode.encode import (
    OUTPUT_CHARACTER_SET,
    Device,
    OutputIdentity,
    declare_private_scheme,
    structure_colours,
    use_utf8,
)

SEG_SERIES_OFFSET = 0


def algorithm_identification(algorithm: Algorithm) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=algorithm.family,
        version=algorithm.version,
        source="myonode",
        parameters={
            **algorithm.parameters,
            "kind": algorithm.kind,
            "intended_use": algorithm.intended_use,
        },
    )


def segment_numbers(label_map: LabelMap) -> dict[int, int]:
    """Label value -> segment number for every structure present in the label map.

    Numbers run 1..N in label order, as PS3.3 C.8.20.2 requires. Structures the engine did
    not find get no segment (a segment needs at least one frame); the SR lists them as not
    found.
    """
    present = label_map.present()
    labels = [label for label in sorted(label_map.structures) if label in present]
    return {label: n for n, label in enumerate(labels, start=1)}


def _segment_description(
    number: int,
    structure: Structure,
    algorithm: Algorithm,
    identity: OutputIdentity,
    colour: tuple[float, float, float],
) -> hd.seg.SegmentDescription:
    """One segment: codes, laterality, algorithm, and the colour the PDF report uses."""
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=structure.name[:64],
        segmented_property_category=structure.category,
        segmented_property_type=structure.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(algorithm),
        tracking_uid=identity.uid("tracking", structure.key),
        tracking_id=structure.key,
        display_color=hd.color.CIELabColor.from_rgb(*(255 * c for c in colour)),
    )
    if structure.laterality is not None:
        # highdicom has no argument for the modifier; PS3.3 C.8.20.2 puts it here.
        modifier = hd.sr.CodedConcept.from_code(structure.laterality)
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [modifier]
    return description


def build_segmentation(
    volume: Volume,
    label_map: LabelMap,
    algorithm: Algorithm,
    identity: OutputIdentity,
    device: Device,
    quality: QualityReport | None = None,
) -> Dataset:
    """A BINARY SEG of `label_map` referencing the slices of `volume`.

    With `quality`, each segment's Segment Description states its QC verdict and reasons: a
    structure that failed QC keeps its segment (to show what was rejected), labelled so.

    When the volume's grid is its source slices (or the frames of one Enhanced source image),
    each frame references its slice (or source frame). When it is
    a grid of its own (Dixon stations fused onto one grid), the frames carry the fused grid's
    positions and the SEG references every source series (PS3.3 C.8.20: a segmentation need
    not share its source images' geometry, only their frame of reference).
    """
    numbers = segment_numbers(label_map)
    if not numbers:
        raise ValueError("no structure was found; there is nothing to put in a SEG")
    lookup = np.zeros(int(label_map.labels.max(initial=0)) + 1, dtype=np.uint8)
    for label, number in numbers.items():
        if label < len(lookup):
            lookup[label] = number
    pixel_array = lookup[label_map.labels]
    source_images, further_sources = volume.datasets, None
    if volume.frame_numbers is not None and volume.slices_are_sources:
        # One Enhanced source: SEG frame n is source frame n (highdicom references each).
        in_frame_order = np.zeros_like(pixel_array)
        in_frame_order[np.asarray(volume.frame_numbers) - 1] = pixel_array
        pixel_array = in_frame_order
    elif not volume.slices_are_sources:
        first_series = volume.datasets[0].SeriesInstanceUID
        source_images = [ds for ds in volume.datasets if ds.SeriesInstanceUID == first_series]
        further_sources = [ds for ds in volume.datasets if ds.SeriesInstanceUID != first_series]
        affine = volume.geometry.affine
        pixel_array = hd.Volume(
            pixel_array,
            affine[:, [2, 1, 0, 3]],  # highdicom indexes (slice, row, column)
            coordinate_system="PATIENT",
            frame_of_reference_uid=str(volume.datasets[0].FrameOfReferenceUID),
        )
    colours = structure_colours(label_map.structures)
    descriptions = [
        _segment_description(
            number, label_map.structures[label], algorithm, identity, colours[label]
        )
        for label, number in numbers.items()
    ]
    if quality is not None:
        for description, label in zip(descriptions, numbers, strict=True):
            description.SegmentDescription = quality.describe(label_map.structures[label].key)[
                :1024
            ]
    segmentation = hd.seg.Segmentation(
        source_images=source_images,
        further_source_images=further_sources or None,
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=identity.uid("seg-series"),
        series_number=identity.series_number(SEG_SERIES_OFFSET),
        sop_instance_uid=identity.uid("seg"),
        instance_number=1,
        manufacturer=device.manufacturer,
        manufacturer_model_name=device.model_name,
        software_versions=device.software_version,
        device_serial_number=device.serial_number,
        content_description=f"{algorithm.label}"[:64],
        content_label="MUSCLE",
        specific_character_set=OUTPUT_CHARACTER_SET,
        series_description=f"myonode {identity.pipeline} SEG ({algorithm.intended_use})"[:64],
    )
    declare_private_scheme(segmentation)
    use_utf8(segmentation)
    return segmentation

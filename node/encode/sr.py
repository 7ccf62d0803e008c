"""TID 1500 Measurement Report in a Comprehensive 3D SR (PS3.16 TID 1500, PS3.3 A.35.13).

The observer is the device/algorithm; each structure is a TID 1411 volumetric ROI group that
references its SEG segment and the source series, with coded measurements in UCUM units.
Free-text context (algorithm, intended use, why this series) goes in the report-level
Qualitative Evaluations container (TID 1500 row 12) as TEXT items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from ..engines import Algorithm
from ..measure import StructureMeasurements
from . import Device, OutputIdentity

SR_SERIES_OFFSET = 1

MASS = Code("118538004", "SCT", "Mass")  # not codes.SCT.Mass (4147007 = mass lesion)
MEAN_ATTENUATION = Code("112031", "DCM", "Attenuation Coefficient")
MEAN = Code("373098007", "SCT", "Mean")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
HOUNSFIELD = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
CUBIC_CENTIMETER = Code("cm3", "UCUM", "cubic centimeter")
GRAM = Code("g", "UCUM", "gram")
QUALITATIVE_EVALUATIONS = Code("126010", "DCM", "Qualitative Evaluations")
COMMENT = Code("121106", "DCM", "Comment")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _measurements(item: StructureMeasurements) -> list[hd.sr.Measurement]:
    measured = [
        hd.sr.Measurement(name=codes.SCT.Volume, value=item.volume_cm3, unit=CUBIC_CENTIMETER),
        hd.sr.Measurement(name=MASS, value=item.mass_g, unit=GRAM),
    ]
    if item.mean_intensity is not None:
        measured.append(
            hd.sr.Measurement(
                name=MEAN_ATTENUATION,
                value=item.mean_intensity,
                unit=HOUNSFIELD,
                derivation=MEAN,
            )
        )
    if item.sd_intensity is not None:
        measured.append(
            hd.sr.Measurement(
                name=MEAN_ATTENUATION,
                value=item.sd_intensity,
                unit=HOUNSFIELD,
                derivation=STANDARD_DEVIATION,
            )
        )
    return measured


def build_report(
    source_datasets: Sequence[Dataset],
    segmentation: Dataset,
    segment_numbers: Mapping[int, int],
    measurements: Sequence[StructureMeasurements],
    algorithm: Algorithm,
    identity: OutputIdentity,
    device: Device,
    procedure: Code,
    comments: Sequence[str] = (),
) -> Dataset:
    """The SR for one job: one volumetric ROI group per segmented structure.

    `segment_numbers` maps each measured label to its segment number in `segmentation`.
    """
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in algorithm.parameters.items()] or None,
    )
    source_series_uid = str(source_datasets[0].SeriesInstanceUID)
    groups = []
    for item in measurements:
        finding_site = hd.sr.FindingSite(
            anatomic_location=item.structure.property_type,
            laterality=item.structure.laterality,
        )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=identity.uid("tracking", item.structure.key),
                    identifier=item.structure.key,
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=segmentation.SOPClassUID,
                    sop_instance_uid=segmentation.SOPInstanceUID,
                    segment_number=segment_numbers[item.label],
                    source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
                ),
                finding_type=item.structure.property_type,
                finding_category=item.structure.category,
                finding_sites=[finding_site],
                algorithm_id=algorithm_id,
                measurements=_measurements(item),
            )
        )
    observer = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=device.uid,
                name=f"{algorithm.name} {algorithm.version}"[:64],
                manufacturer_name=device.manufacturer,
                model_name=device.model_name,
                serial_number=device.serial_number,
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observer,
        procedure_reported=procedure,
        imaging_measurements=groups,
    )
    notes = [
        f"Algorithm: {algorithm.label}.",
        _intended_use_statement(algorithm),
        *comments,
    ]
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence([_text(COMMENT, note) for note in notes])
    report[0].ContentSequence.append(container)
    return hd.sr.Comprehensive3DSR(
        evidence=[*source_datasets, segmentation],
        content=report,
        series_instance_uid=identity.uid("sr-series"),
        series_number=identity.series_number(SR_SERIES_OFFSET),
        sop_instance_uid=identity.uid("sr"),
        instance_number=1,
        manufacturer=device.manufacturer,
        is_complete=True,
        series_description=f"myonode {identity.pipeline} SR ({algorithm.intended_use})"[:64],
    )


def _intended_use_statement(algorithm: Algorithm) -> str:
    if algorithm.intended_use == "clinical":
        return "Intended use: clinical (site-validated model)."
    if algorithm.intended_use == "research":
        return "Intended use: research only; not validated for clinical decisions."
    return "Intended use: demonstration only; these numbers are not a clinical measurement."

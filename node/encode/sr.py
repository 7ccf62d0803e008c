"""TID 1500 Measurement Report in a Comprehensive 3D SR (PS3.16 TID 1500, PS3.3 A.35.13).

- Observer: the device/algorithm (TID 1004).
- One TID 1411 volumetric ROI group per segmented structure, referencing its SEG segment and
  the source series: volume, mass, mean/SD attenuation (CT) or fat fraction (Dixon), CSA at
  L3, and the mass change since a prior study; its quality-control verdict (`myonode.qc`) as
  a coded qualitative evaluation with the reasons as text. A structure that failed QC keeps
  its group (and SEG segment) with the verdict and reasons but no measurement.
- Before those, one TID 1410 planar ROI group per structure for its maximum CSA (same
  tracking identifier, its own tracking UID): the area, and the region's outline on that
  source image as a SCOORD polyline, so viewers that draw measurements on images (OHIF)
  show where it was measured. Where the measured slices are not source images (a fused
  Dixon grid), the maximum CSA is in the volumetric group instead, without an image.
- TID 1501 groups for the derived indices, for each reference comparison (tracking identifier
  ``reference:<quantity>``: value, z-score, percentile), for each value a regression model
  predicted (``prediction:<key>``: the mean and the standard deviation, with the method
  "predicted from the image" and the source image) and for the sarcopenia assessment (coded
  conclusions per guideline).
- A report-level Qualitative Evaluations container (TID 1500 row 12) with TEXT items: the
  algorithm and intended use, why this series was measured, what was omitted and why, the
  references used and the criteria evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from myonode.core.types import Algorithm
from myonode.dicom import codes as c
from myonode.encode import (
    OUTPUT_CHARACTER_SET,
    Device,
    OutputIdentity,
    declare_private_scheme,
    use_utf8,
)
from myonode.measure.assessment import Assessment, Change
from myonode.measure.prediction import PREDICTED_SARCOPENIA, PREDICTION_PREFIX, Prediction
from myonode.measure.structures import StructureMeasurements

SR_SERIES_OFFSET = 1


def _text(value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=c.COMMENT, value=value[:1024], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


def _num(name: Code, value: float, unit: str, **kwargs) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=value, unit=c.ucum(unit), **kwargs)


def _verdict(assessment: Assessment, key: str) -> list[hd.sr.QualitativeEvaluation] | None:
    """The structure's QC verdict as a coded qualitative evaluation (None without QC)."""
    if assessment.quality is None:
        return None
    return [hd.sr.QualitativeEvaluation(c.QC_VERDICT, c.QC_VALUES[assessment.quality.verdict(key)])]


def _maximum_area_group(
    item: StructureMeasurements,
    sources: Sequence[Dataset],
    identity: OutputIdentity,
    algorithm_id: hd.sr.AlgorithmIdentification,
    frame_numbers: Sequence[int] | None,
    assessment: Assessment,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410: the largest cross-section, outlined on the image (or frame) it was measured
    on."""
    index = item.max_area.slice_index
    image = sources[0] if frame_numbers is not None else sources[index]
    frames = [frame_numbers[index]] if frame_numbers is not None else None
    structure = item.structure
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.uid("tracking", f"{structure.key}:max-csa"), identifier=structure.key
        ),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=item.max_area.outline.astype("float32"),
            source_image=hd.sr.SourceImageForRegion(
                image.SOPClassUID, image.SOPInstanceUID, referenced_frame_numbers=frames
            ),
        ),
        finding_type=structure.property_type,
        finding_category=structure.category,
        finding_sites=[hd.sr.FindingSite(structure.property_type, laterality=structure.laterality)],
        algorithm_id=algorithm_id,
        measurements=[_num(c.AREA, item.max_area.area_cm2, "cm2", derivation=c.MAXIMUM)],
        qualitative_evaluations=_verdict(assessment, structure.key),
    )


def _structure_measurements(
    item: StructureMeasurements, change: Change | None, with_max_area: bool
) -> list[hd.sr.Measurement]:
    """`with_max_area`: the maximum CSA is here only when it has no planar group (its slice
    is not a source image, e.g. on a fused Dixon grid)."""
    measured = [
        _num(c.VOLUME, item.volume_cm3, "cm3"),
        _num(c.MASS, item.mass_g, "g"),
    ]
    for concept, stats, unit in (
        (c.ATTENUATION, item.attenuation, "[hnsf'U]"),
        (c.FAT_FRACTION, item.fat_fraction, "%"),
    ):
        if stats is not None:
            measured.append(_num(concept, stats.mean, unit, derivation=c.MEAN))
            measured.append(_num(concept, stats.sd, unit, derivation=c.STANDARD_DEVIATION))
    if with_max_area and item.max_area is not None:
        measured.append(_num(c.AREA, item.max_area.area_cm2, "cm2", derivation=c.MAXIMUM))
    if item.area_at_l3_cm2 is not None:
        measured.append(_num(c.AREA_AT_L3, item.area_at_l3_cm2, "cm2"))
    if change is not None:
        measured.append(_num(c.MASS_CHANGE, change.change_g, "g"))
        if change.rate_g_per_year is not None:
            measured.append(_num(c.MASS_CHANGE_RATE, change.rate_g_per_year, "g/a"))
    return measured


def _derived_measurement(key: str, value: float, unit: str) -> hd.sr.Measurement:
    concept, site = c.DERIVED[key]
    return _num(concept, value, unit, finding_sites=[hd.sr.FindingSite(site)] if site else None)


def _prediction_group(
    prediction: Prediction,
    identity: OutputIdentity,
    algorithm_id: hd.sr.AlgorithmIdentification,
    sources: Sequence[Dataset],
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A predicted quantity: the Gaussian's mean and, where given, its standard deviation."""
    target = prediction.target
    derivation = {"derivation": c.MEAN} if prediction.sd is not None else {}
    measurements = [_num(target.code, prediction.mean, target.unit, **derivation)]
    if prediction.sd is not None:
        measurements.append(
            _num(target.code, prediction.sd, target.unit, derivation=c.STANDARD_DEVIATION)
        )
    return _group(
        identity,
        PREDICTION_PREFIX + prediction.key,
        method=c.PREDICTED,
        algorithm_id=algorithm_id,
        measurements=measurements,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(ds.SOPClassUID, ds.SOPInstanceUID)
            for ds in sources
        ],
    )


def _group(
    identity: OutputIdentity, identifier: str, **kwargs
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.uid("tracking", identifier), identifier=identifier
        ),
        **kwargs,
    )


def _statements(assessment: Assessment, algorithm: Algorithm, reasons: Sequence[str]) -> list[str]:
    statements = [f"Algorithm: {algorithm.label}.", intended_use_statement(algorithm)]
    statements += [f"Series selection: {r}" for r in reasons]
    statements += assessment.notes
    missing = [s.structure.name for s in assessment.structures if s.voxel_count == 0]
    if missing:
        statements.append("Not found in the image: " + ", ".join(missing) + ".")
    if assessment.quality is not None:
        found = [s for s in assessment.structures if s.voxel_count]
        verdicts = [assessment.quality.verdict(s.structure.key) for s in found]
        statements.append(
            "Quality control: "
            + ", ".join(f"{verdicts.count(v)} {v}" for v in ("pass", "review", "fail"))
            + " (failed structures are not measured; values under review are not used for "
            "indices, reference comparisons or sarcopenia criteria)."
        )
        statements += [
            f"{s.structure.name}: {assessment.quality.describe(s.structure.key)}"
            for s, verdict in zip(found, verdicts, strict=True)
            if verdict != "pass"
        ]
    for comparison in assessment.comparisons:
        statements.append(
            f"Reference for {comparison.quantity}: {comparison.reference.describe()} "
            f"{comparison.unit}; z = {comparison.z_score:.2f}, percentile "
            f"{comparison.percentile:.0f} (normal approximation)."
        )
    for change in assessment.changes:
        rate = (
            f", {change.rate_g_per_year:+.1f} g/year" if change.rate_g_per_year is not None else ""
        )
        statements.append(
            f"Change of {change.structure} since study {change.prior.study_uid} "
            f"({change.prior.study_date:%Y-%m-%d}): {change.change_g:+.1f} g{rate}."
        )
    for prediction in assessment.predictions:
        target = prediction.target
        spread = f" (σ {prediction.sd:.3g} {target.unit})" if prediction.sd is not None else ""
        statements.append(
            f"Predicted {target.name.lower()}: {prediction.mean:.3g} {target.unit}{spread}."
        )
    statements += [s.statement() for s in assessment.sarcopenia]
    return statements


def intended_use_statement(algorithm: Algorithm) -> str:
    if algorithm.intended_use == "clinical":
        return "Intended use: clinical (site-validated model)."
    if algorithm.intended_use == "research":
        return "Intended use: research only; not validated for clinical decisions."
    return "Intended use: demonstration only; these numbers are not a clinical measurement."


def build_report(
    source_datasets: Sequence[Dataset],
    segmentation: Dataset | None,
    segment_numbers: Mapping[int, int],
    assessment: Assessment,
    algorithm: Algorithm,
    identity: OutputIdentity,
    device: Device,
    procedure: Code,
    reasons: Sequence[str] = (),
    slices_are_sources: bool = True,
    frame_numbers: Sequence[int] | None = None,
) -> Dataset:
    """The SR for one job. `segment_numbers` maps each encoded label to its SEG segment;
    without a SEG (nothing found) the report holds only indices, assessment and notes.
    `slices_are_sources` says whether measured slice k is `source_datasets[k]` (else no
    measurement references a single source image); `frame_numbers[k]` is the frame of the one
    Enhanced source image that slice k is (None: single-frame sources)."""
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[
            f"{k}={v}"
            for k, v in {
                **algorithm.parameters,
                "kind": algorithm.kind,
                "intended_use": algorithm.intended_use,
            }.items()
        ],
    )
    source_series = hd.sr.SourceSeriesForSegmentation(str(source_datasets[0].SeriesInstanceUID))
    changes = {change.structure: change for change in assessment.changes}
    # Planar groups first: OHIF's SR viewport opens on the first measurement with an image.
    groups: list = [
        _maximum_area_group(
            item, source_datasets, identity, algorithm_id, frame_numbers, assessment
        )
        for item in assessment.structures
        if slices_are_sources
        and segmentation is not None
        and item.label in segment_numbers
        and item.max_area
        and assessment.published(item)
    ]
    for item in assessment.structures:
        if segmentation is None or item.label not in segment_numbers:
            continue
        structure = item.structure
        measurements = (
            _structure_measurements(
                item, changes.get(structure.key), with_max_area=not slices_are_sources
            )
            if assessment.published(item)
            else []
        )
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=identity.uid("tracking", structure.key), identifier=structure.key
            ),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=segmentation.SOPClassUID,
                sop_instance_uid=segmentation.SOPInstanceUID,
                segment_number=segment_numbers[item.label],
                source_series=source_series,
            ),
            finding_type=structure.property_type,
            finding_category=structure.category,
            finding_sites=[
                hd.sr.FindingSite(structure.property_type, laterality=structure.laterality)
            ],
            algorithm_id=algorithm_id,
            measurements=measurements or None,
            qualitative_evaluations=_verdict(assessment, structure.key),
        )
        if assessment.quality is not None:
            text = assessment.quality.describe(structure.key)
            group[0].ContentSequence.append(
                hd.sr.TextContentItem(
                    name=c.QC_REASONS,
                    value=text[:1024],
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
        groups.append(group)
    derived = [
        _derived_measurement(d.key, d.value, d.unit)
        for d in assessment.derived
        if d.value is not None and d.key in c.DERIVED
    ]
    if derived:
        groups.append(
            _group(identity, "derived-indices", measurements=derived, algorithm_id=algorithm_id)
        )
    for comparison in assessment.comparisons:
        groups.append(
            _group(
                identity,
                f"reference:{comparison.quantity}",
                measurements=[
                    _derived_measurement(comparison.quantity, comparison.value, comparison.unit),
                    _num(c.Z_SCORE, comparison.z_score, "{z-score}"),
                    _num(c.PERCENTILE, comparison.percentile, "%"),
                ],
            )
        )
    groups += [
        _prediction_group(p, identity, algorithm_id, source_datasets)
        for p in assessment.predictions
    ]
    conclusions = [
        hd.sr.QualitativeEvaluation(c.GUIDELINES[s.guideline], c.CONCLUSIONS[s.conclusion])
        for s in assessment.sarcopenia
    ]
    if assessment.predictions:  # conclusions from predicted inputs say so, and by which model
        groups.append(
            _group(
                identity,
                PREDICTED_SARCOPENIA,
                method=c.PREDICTED,
                algorithm_id=algorithm_id,
                qualitative_evaluations=conclusions,
            )
        )
    else:
        groups.append(_group(identity, "sarcopenia", qualitative_evaluations=conclusions))
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
    container = hd.sr.ContainerContentItem(
        name=c.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [_text(s) for s in _statements(assessment, algorithm, reasons)]
    )
    report[0].ContentSequence.append(container)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source_datasets, *([segmentation] if segmentation is not None else [])],
        content=report,
        series_instance_uid=identity.uid("sr-series"),
        series_number=identity.series_number(SR_SERIES_OFFSET),
        sop_instance_uid=identity.uid("sr"),
        instance_number=1,
        manufacturer=device.manufacturer,
        is_complete=True,
        specific_character_set=OUTPUT_CHARACTER_SET,
        series_description=f"myonode {identity.pipeline} SR ({algorithm.intended_use})"[:64],
    )
    declare_private_scheme(sr)
    use_utf8(sr)
    return sr

"""The visual report: a key image with the muscle overlay and the patient's values against
the reference distributions, as an Encapsulated PDF in the same study (PS3.3 A.45.1).

For readers who would rather look than read: the key slice is L3 when the engine found it,
else the slice with the most muscle; each reference comparison is drawn as the published
normal distribution with the patient's value marked.
"""

from __future__ import annotations

import datetime as dt
import io
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, EncapsulatedPDFStorage, ExplicitVRLittleEndian

from myonode.core.types import Algorithm, LabelMap
from myonode.core.volume import Volume
from myonode.encode import (
    Device,
    OutputIdentity,
    conform_copied_attributes,
    structure_colours,
    use_utf8,
)
from myonode.encode.sr import intended_use_statement
from myonode.measure.assessment import Assessment
from myonode.measure.structures import StructureMeasurements

PDF_SERIES_OFFSET = 2
_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)


def key_slice(label_map: LabelMap) -> tuple[int, str]:
    """The slice to show and why: L3 if known, else the one with the most labelled muscle."""
    l3 = label_map.landmarks.get("l3_slice")
    if l3 is not None:
        return int(l3), "L3"
    muscle = [n for n, s in label_map.structures.items() if s.muscle] or list(label_map.structures)
    counts = label_map.mask_of(muscle).reshape(label_map.labels.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)), "largest muscle cross-section"


def _window(image: np.ndarray, modality: str) -> np.ndarray:
    if modality == "CT":
        low, high = 40 - 200, 40 + 200  # window 400 / level 40, as seed 000
    else:
        low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def _overlay_axes(ax, volume: Volume, label_map: LabelMap, modality: str) -> None:
    k, why = key_slice(label_map)
    ax.imshow(_window(volume.array[k], modality), cmap="gray", interpolation="nearest")
    colours = structure_colours(label_map.structures)
    overlay = np.zeros((*label_map.labels.shape[1:], 4))
    present = []
    for label, structure in sorted(label_map.structures.items()):
        mask = label_map.labels[k] == label
        if mask.any():
            overlay[mask] = (*colours[label], 0.45)
            present.append((structure.name, colours[label]))
    ax.imshow(overlay, interpolation="nearest")
    ax.set_title(f"Slice {k + 1} ({why})", fontsize=9)
    ax.axis("off")
    for name, colour in present[:14]:
        ax.plot([], [], "s", color=colour, label=name)
    if present:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)


def _reference_axes(axes: Sequence, assessment: Assessment) -> None:
    for ax, comparison in zip(axes, assessment.comparisons, strict=False):
        ref = comparison.reference
        x = np.linspace(ref.mean - 4 * ref.sd, ref.mean + 4 * ref.sd, 200)
        x = np.union1d(x, [comparison.value])
        density = np.exp(-0.5 * ((x - ref.mean) / ref.sd) ** 2)
        ax.fill_between(x, density, color="#c6dbef")
        ax.axvline(comparison.value, color="#d62728", linewidth=2)
        ax.set_title(
            f"{comparison.quantity} = {comparison.value:.4g} {comparison.unit}\n"
            f"z = {comparison.z_score:+.2f}, percentile {comparison.percentile:.0f}",
            fontsize=7,
        )
        ax.set_yticks([])
        ax.tick_params(labelsize=6)
        ax.set_xlabel(f"{ref.source}, {ref.population}", fontsize=5)


def _verdict(assessment: Assessment, item: StructureMeasurements) -> str:
    """The QC column: the verdict ('–' where QC did not run)."""
    return assessment.quality.verdict(item.structure.key) if assessment.quality else "–"


def render_key_image(volume: Volume, label_map: LabelMap) -> bytes:
    """The report's key image with the overlay, as PNG: the dashboard's picture of a job."""
    figure = Figure(figsize=(6.4, 4.4))
    modality = str(volume.datasets[0].get("Modality", "")) if volume.datasets else ""
    _overlay_axes(figure.add_axes((0.01, 0.02, 0.66, 0.9)), volume, label_map, modality)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def render_pdf(
    volume: Volume,
    label_map: LabelMap,
    assessment: Assessment,
    algorithm: Algorithm,
    title: str,
) -> bytes:
    """A one-page A4 PDF: header, key image with overlay, values table, reference plots."""
    figure = Figure(figsize=(8.27, 11.69))  # A4; Figure (not pyplot) is safe in worker threads
    figure.text(0.05, 0.965, title, fontsize=13, weight="bold")
    figure.text(0.05, 0.945, f"{algorithm.label}", fontsize=8)
    figure.text(0.05, 0.93, intended_use_statement(algorithm), fontsize=8, color="#b2182b")
    modality = str(volume.datasets[0].get("Modality", "")) if volume.datasets else ""
    if label_map.labels.size:
        _overlay_axes(figure.add_axes((0.05, 0.56, 0.55, 0.35)), volume, label_map, modality)
    elif assessment.predictions:  # a radiograph: the image the values were predicted from
        ax = figure.add_axes((0.05, 0.56, 0.55, 0.35))
        ax.imshow(_window(volume.array[0], modality), cmap="gray", interpolation="nearest")
        ax.set_title("Source radiograph (values are predictions, not measurements)", fontsize=8)
        ax.axis("off")
    rows = [
        (
            s.structure.name,
            _verdict(assessment, s),
            *(
                (
                    f"{s.volume_cm3:.1f}",
                    f"{s.mass_g:.1f}",
                    f"{s.attenuation.mean:.0f}"
                    if s.attenuation
                    else (f"{s.fat_fraction.mean:.1f} %" if s.fat_fraction else ""),
                )
                if assessment.published(s)
                else ("not measured", "", "")
            ),
        )
        for s in assessment.structures
        if s.voxel_count
    ]
    labels = ["structure", "QC", "volume cm³", "mass g", "mean HU / FF"]
    if assessment.predictions:
        labels = ["predicted", "mean", "σ", "unit"]
        rows = [
            (
                p.target.name,
                f"{p.mean:.3g}",
                f"{p.sd:.3g}" if p.sd is not None else "",
                p.target.unit,
            )
            for p in assessment.predictions
        ]
    table_ax = figure.add_axes((0.05, 0.30, 0.9, 0.24))
    table_ax.axis("off")
    if rows:
        table = table_ax.table(
            cellText=rows[:18],
            colLabels=labels,
            loc="upper center",
            cellLoc="left",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(7)
    if assessment.quality is not None:
        doubtful = [
            f"{s.structure.name}: {assessment.quality.describe(s.structure.key)}"
            for s in assessment.structures
            if s.voxel_count and not assessment.quality.passed(s.structure.key)
        ]
        if doubtful:
            figure.text(
                0.62,
                0.73,
                "Quality control (not pass):\n"
                + "\n".join(textwrap.shorten(d, 240) for d in doubtful[:8]),
                fontsize=5.5,
                va="top",
                wrap=True,
            )
    derived = [d for d in assessment.derived if d.value is not None][:6]
    figure.text(
        0.05,
        0.285,
        "   ".join(f"{d.name}: {d.value:.4g} {d.unit}" for d in derived) or "",
        fontsize=7,
        wrap=True,
    )
    comparisons = assessment.comparisons[:8]
    if comparisons:
        columns = 4
        axes = [
            figure.add_axes((0.05 + (i % columns) * 0.235, 0.17 - (i // columns) * 0.13, 0.2, 0.08))
            for i in range(len(comparisons))
        ]
        _reference_axes(axes, assessment)
    elif assessment.predictions:  # the model's notes: intended use, what was not predicted
        figure.text(0.05, 0.2, "\n".join(assessment.notes[:8]), fontsize=8, wrap=True)
    else:
        reasons = [n for n in assessment.notes if "reference" in n.lower() or "evaluable: QC" in n][
            :8
        ] or ["No published reference applies to these structures."]
        figure.text(0.05, 0.2, "\n".join(reasons), fontsize=8, wrap=True)
    conclusions = "; ".join(f"{s.guideline}: {s.conclusion}" for s in assessment.sarcopenia)
    figure.text(0.05, 0.03, f"Sarcopenia criteria — {conclusions}", fontsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="pdf", metadata={"Title": title, "Creator": "myonode"})
    return buffer.getvalue()


def build_encapsulated_pdf(
    pdf: bytes,
    source: Dataset,
    identity: OutputIdentity,
    device: Device,
    title: str,
    derived_from: Sequence[Dataset] = (),
) -> Dataset:
    """An Encapsulated PDF instance in the source study (Encapsulated Document IOD)."""
    now = dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.file_meta.MediaStorageSOPInstanceUID = identity.uid("pdf")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    use_utf8(ds)
    for keyword in _PATIENT_STUDY:
        if keyword in source:
            setattr(ds, keyword, source[keyword].value)
    conform_copied_attributes([ds])
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = identity.uid("pdf")
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = identity.uid("pdf-series")
    ds.SeriesNumber = identity.series_number(PDF_SERIES_OFFSET)
    ds.SeriesDescription = f"myonode {identity.pipeline} report"[:64]
    ds.Manufacturer = device.manufacturer
    ds.ManufacturerModelName = device.model_name
    ds.SoftwareVersions = device.software_version
    ds.DeviceSerialNumber = device.serial_number
    ds.ConversionType = "SYN"
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    if derived_from:
        items = []
        for reference in derived_from:
            item = Dataset()
            item.ReferencedSOPClassUID = reference.SOPClassUID
            item.ReferencedSOPInstanceUID = reference.SOPInstanceUID
            items.append(item)
        ds.SourceInstanceSequence = items
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds

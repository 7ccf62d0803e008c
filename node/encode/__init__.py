"""The encode stage: DICOM SEG, TID 1500 SR and the visual report (Encapsulated PDF) from
measured results, with the identity and attributes they copy from the source (no I/O).

May import `measure`, `store.records`, `core` and `dicom`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from matplotlib import colormaps
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

from myonode import __version__
from myonode.dicom.anatomy import PRIVATE_SCHEME, Structure
from myonode.dicom.uids import derived_uid

log = logging.getLogger(__name__)


def structure_colours(structures: Mapping[int, Structure]) -> dict[int, tuple[float, float, float]]:
    """RGB (0-1) per label: the PDF's overlay and the SEG's recommended display colours are
    the same, so a viewer shows each structure as the report does."""
    palette = colormaps["tab20"]
    return {label: palette(n % 20)[:3] for n, label in enumerate(sorted(structures))}


@dataclass(frozen=True)
class Device:
    """The equipment that creates the outputs (General Equipment Module, PS3.3 C.7.5.1)."""

    manufacturer: str = "myonode project"
    model_name: str = "myonode"
    software_version: str = __version__
    serial_number: str = "MYONODE"

    @property
    def uid(self) -> str:
        return derived_uid("device", self.serial_number)


@dataclass(frozen=True)
class OutputIdentity:
    """UIDs and numbers of one job's output series, derived from source series + pipeline."""

    source_series_uid: str
    pipeline: str
    pipeline_version: str
    series_number_base: int

    def uid(self, kind: str, item: str = "") -> str:
        return derived_uid(self.source_series_uid, self.pipeline, self.pipeline_version, kind, item)

    def series_number(self, offset: int) -> int:
        return self.series_number_base + offset


# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1) that
# derived objects copy from their sources; real images often omit them entirely.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
# Type 3 attributes of the Patient Study module (PS3.3 C.7.2.2) that outputs copy if present.
_TYPE3_COPIED = ("PatientAge", "PatientSize", "PatientWeight")
# What archives file a study by (Orthanc's patient and study identifiers, a PACS's order
# match): copied byte for byte even where they break their VR, or the results would be filed
# apart from their source (a second patient, a second study with the same UID).
IDENTITY = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "StudyInstanceUID",
    "AccessionNumber",
    "StudyID",
)
# Identity attributes of VM 1 that scanners send multi-valued (an examination done for two
# orders, ACC1\ACC2) and that archives do not file by: the outputs carry the first value,
# valid and matching one of the orders, while the node stores and lists the value as sent.
_FIRST_VALUE_ONLY = ("AccessionNumber",)
# Free-text VRs whose over-long values are cut to their maximum (PS3.5 6.2): a description
# loses its tail, but the outputs stay valid.
_TEXT_LENGTHS = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240}
# What outputs are written in: UTF-8 carries any source's text (PS3.5 6.1.2.3).
OUTPUT_CHARACTER_SET = "ISO_IR 192"


def conform_copied_attributes(datasets: Sequence[Dataset]) -> None:
    """Make the source attributes that outputs copy valid for them (changes them in place).

    Text is decoded with the source's Specific Character Set (any set pydicom knows, ISO 2022
    code extensions included) and the datasets are relabelled UTF-8, the outputs' set, so
    copying never depends on the source's declaration. Identity attributes (`IDENTITY`) are
    kept exactly, with a warning where they break their VR, except that a multi-valued
    AccessionNumber keeps its first value (`_FIRST_VALUE_ONLY`). Free text longer than its VR
    allows is truncated. An absent Type 2 attribute becomes empty. Any other value invalid for
    its VR (real radiographs carry e.g. PatientAge "62" where PS3.5 requires "062Y") is emptied
    (Type 2) or removed (Type 3), with a warning: copied as it is, it would make the SEG, SR
    and PDF invalid, and guessing what the sender meant could make them wrong.
    """
    for ds in datasets:
        _decode_to_utf8(ds)
        for keyword in _TYPE2_COPIED:
            if keyword not in ds:
                setattr(ds, keyword, "")
        for element in list(ds):
            keyword = element.keyword
            if element.VR not in _TEXT_LENGTHS or keyword in IDENTITY:
                continue
            _truncate(ds, element)
        for keyword in _FIRST_VALUE_ONLY:
            if keyword in ds and isinstance(ds[keyword].value, MultiValue):
                log.warning(
                    "%s in %s has %d values where one is allowed; the outputs carry the first",
                    keyword,
                    ds.get("SOPInstanceUID", "a source"),
                    len(ds[keyword].value),
                )
                ds[keyword].value = ds[keyword].value[0] if ds[keyword].value else ""
        for keyword in IDENTITY:
            if keyword in ds and not _valid_for_vr(ds[keyword]):
                log.warning(
                    "%s %r in %s is not a valid %s; copied exactly all the same, so that the "
                    "archive files the results with their source (the outputs do not conform "
                    "here)",
                    keyword,
                    str(ds[keyword].value),
                    ds.get("SOPInstanceUID", "a source"),
                    ds[keyword].VR,
                )
        for keyword in _TYPE2_COPIED + _TYPE3_COPIED:
            if keyword in IDENTITY or keyword not in ds or _valid_for_vr(ds[keyword]):
                continue
            log.warning(
                "%s %r in %s is not a valid %s; left out of the outputs",
                keyword,
                str(ds[keyword].value),
                ds.get("SOPInstanceUID", "a source"),
                ds[keyword].VR,
            )
            if keyword in _TYPE2_COPIED:
                setattr(ds, keyword, "")
            else:
                del ds[keyword]


def _decode_to_utf8(ds: Dataset) -> None:
    """Decode every text value with the declared set, then declare UTF-8 (what the values
    will be written in from now on).

    Walking the dataset decodes each element with the set it was read with. Person names
    keep their original bytes after decoding, and pydicom writes those bytes again when the
    sets look alike; they are replaced by their text so UTF-8 is written.
    """

    def plain_names(dataset: Dataset, element: DataElement) -> None:
        if element.VR == "PN" and element.value is not None:
            values = element.value if isinstance(element.value, MultiValue) else [element.value]
            names = [str(v) for v in values]
            element.value = names if isinstance(element.value, MultiValue) else names[0]

    ds.walk(plain_names)
    ds.SpecificCharacterSet = OUTPUT_CHARACTER_SET


def _truncate(ds: Dataset, element: DataElement) -> None:
    limit = _TEXT_LENGTHS[element.VR]
    values = element.value if isinstance(element.value, MultiValue) else [element.value]
    if all(len(str(v)) <= limit for v in values if v is not None):
        return
    log.warning(
        "%s in %s is longer than its VR %s allows (%d characters); truncated in the outputs",
        element.keyword or element.tag,
        ds.get("SOPInstanceUID", "a source"),
        element.VR,
        limit,
    )
    cut = [str(v)[:limit] if v is not None else v for v in values]
    element.value = cut if isinstance(element.value, MultiValue) else cut[0]


def _valid_for_vr(element: DataElement) -> bool:
    values = element.value if isinstance(element.value, MultiValue) else [element.value]
    try:
        for value in values:
            if value not in (None, ""):
                validate_value(element.VR, str(value), validation_mode=config.RAISE)
    except ValueError:
        return False
    return True


def declare_private_scheme(dataset: Dataset) -> None:
    """Identify the private coding scheme in the SOP Common module (PS3.3 C.12.1.1.3)."""
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "myonode private concepts"
    scheme.CodingSchemeResponsibleOrganization = "myonode project"
    dataset.CodingSchemeIdentificationSequence = [scheme]


def use_utf8(dataset: Dataset) -> None:
    """Encode the output in UTF-8 (ISO_IR 192) whatever the source used.

    Outputs mix the source's patient data with our text (selection reasons quote series
    descriptions in any script); UTF-8 holds all of it (PS3.5 6.1.2.3).
    """
    dataset.SpecificCharacterSet = OUTPUT_CHARACTER_SET

"""Orthanc as the archive (the repository's orthanc/ configuration and plugin): a study that
also holds objects the node does not take (a dose SR, a presentation state, a Siemens CSA
non-image object filed as CT) is forwarded without them, the plugin says which it left out
and why; the results, with a 70-character PatientID copied exactly, land in the source's
patient and study, and a Cyrillic patient name comes back from QIDO-RS as it was written."""

import json

import pydicom
import requests
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.dicom.uids import derived_uid

from conftest import make_settings
from support import ArchiveOrthanc, free_port, scanner_sends, wait_until

CYRILLIC = "Люкceмбypг^Иван"
LONG_ID = "ID-" + "0123456789" * 6 + "ABCDEFG"  # 70 characters; LO allows 64
# SOP class, modality, series description of objects a CT study really holds beside images.
OTHER_OBJECTS = {
    "dose": ("1.2.840.10008.5.1.4.1.1.88.67", "SR", "Dose Report"),
    "gsps": ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "Key views"),
    "csa": ("1.3.12.2.1107.5.9.1", "CT", "PhoenixZIPReport"),  # Siemens CSA Non-Image
}


def _other_object(source: pydicom.Dataset, kind: str) -> bytes:
    sop_class, modality, description = OTHER_OBJECTS[kind]
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = derived_uid("other", kind, "instance")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime"):
        setattr(ds, keyword, source[keyword].value)
    ds.SpecificCharacterSet = source.SpecificCharacterSet
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = derived_uid("other", kind, "series")
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.SeriesNumber = 900 + list(OTHER_OBJECTS).index(kind)
    ds.InstanceNumber = 1
    path = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path.getvalue()


def test_study_with_objects_the_node_does_not_take(tmp_path, node_factory):
    dicom_port, http_port = free_port(), free_port()
    orthanc = ArchiveOrthanc(tmp_path / "orthanc", dicom_port, http_port).start()
    try:
        settings = make_settings(
            tmp_path,
            **{
                "dicom.port": dicom_port,
                "http.port": http_port,
                "peers.ORTHANC": {"host": "127.0.0.1", "port": orthanc.dicom_port},
                "dispatch.destinations": ["ORTHANC"],
            },
        )
        node = node_factory(settings)
        array, geometry = abdomen_phantom(shape=(8, 96, 96), pixel_mm=2.5, slice_mm=5.0)
        ct = write_ct_series(
            array,
            geometry,
            tmp_path / "ct",
            Patient(patient_id=LONG_ID, name=CYRILLIC),
            seed="archive-left-out",
            extra={"SpecificCharacterSet": "ISO_IR 144"},
        )
        source = pydicom.dcmread(ct[0])
        auth = (orthanc.USER, orthanc.password)
        for kind in OTHER_OBJECTS:
            requests.post(
                f"{orthanc.url}/instances", data=_other_object(source, kind), auth=auth, timeout=30
            ).raise_for_status()
        scanner_sends(ct, "ORTHANC", orthanc.dicom_port)
        client = orthanc.client()

        def modalities() -> list[str]:
            [study] = client.get_studies()
            series = client.get_studies_id(study)["Series"]
            return sorted(client.get_series_id(s)["MainDicomTags"]["Modality"] for s in series)

        wait_until(lambda: modalities() == ["CT", "CT", "DOC", "PR", "SEG", "SR", "SR"], 180)
        assert node.index.counts()["instances"]["total"] == len(ct)  # the CT images only
        [study] = client.get_studies()  # the results are filed with their source
        [patient] = client.get_patients()
        assert client.get_patients_id(patient)["MainDicomTags"]["PatientID"] == LONG_ID
        metadata = client.get_studies_id_metadata(study, params={"expand": ""})
        left_out = {
            item["SeriesDescription"]: item for item in json.loads(metadata["MyoNodeLeftOut"])
        }
        assert sorted(left_out) == sorted(d for _, _, d in OTHER_OBJECTS.values())
        assert "SOP class 1.3.12.2.1107.5.9.1" in left_out["PhoenixZIPReport"]["Reason"]
        assert "modality PR" in left_out["Key views"]["Reason"]
        wait_until(
            lambda: (
                client.get_studies_id_metadata(study, params={"expand": ""}).get("MyoNodeStatus")
                == "done"
            )
        )

        found = requests.get(
            f"{orthanc.dicomweb}/studies",
            params={"includefield": "00100010"},
            auth=auth,
            timeout=30,
        ).json()
        assert [s["00100010"]["Value"][0]["Alphabetic"] for s in found] == [CYRILLIC]
    finally:
        orthanc.stop()

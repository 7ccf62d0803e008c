"""Results where the hospital keeps them: the node's SRs found in an archive over DICOMweb.

QIDO-RS finds SR series (optionally by patient, study and date), WADO-RS retrieves them, and
`results.records_from_sr` reads them back into the same rows the local index holds. Only SRs
this software wrote (Manufacturer and series description) are read.
"""

from __future__ import annotations

import datetime as dt
import logging

from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from myonode.encode import Device
from myonode.measure.assessment import Prior
from myonode.measure.results import records_from_sr
from myonode.store.records import ResultFilter, ResultRecord

log = logging.getLogger(__name__)
SERIES_PREFIX = "myonode "


class ArchiveError(RuntimeError):
    """The archive could not be queried; the message says where and why."""


def _date_range(wanted: ResultFilter) -> str | None:
    if wanted.since is None and wanted.until is None:
        return None
    since = wanted.since.strftime("%Y%m%d") if wanted.since else ""
    until = wanted.until.strftime("%Y%m%d") if wanted.until else ""
    return f"{since}-{until}"


class Archive:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.client = DICOMwebClient(self.url, timeout=timeout_s)
        # dicomweb-client retries every failed request for ~30 s; the node has its own retries
        # (the outbox's backoff, the next job), and a blocked worker helps nobody.
        self.client.set_http_retry_params(retry=False)

    def result_reports(self, wanted: ResultFilter) -> list[Dataset]:
        """The node's SR instances matching the patient, study and date filters."""
        filters: dict[str, str] = {"Modality": "SR"}
        if wanted.patient_id:
            filters["PatientID"] = wanted.patient_id
        dates = _date_range(wanted)
        if dates:
            filters["StudyDate"] = dates
        try:
            found = self.client.search_for_series(
                study_instance_uid=wanted.study_uid,
                search_filters=filters,
                fields=["SeriesDescription", "Manufacturer"],
                get_remaining=True,
            )
            reports = []
            for item in found:
                series = Dataset.from_json(item)
                if not str(series.get("SeriesDescription", "")).startswith(SERIES_PREFIX):
                    continue
                for instance in self.client.retrieve_series(
                    str(series.StudyInstanceUID), str(series.SeriesInstanceUID)
                ):
                    if instance.get("Manufacturer") == Device.manufacturer:
                        reports.append(instance)
        except Exception as exc:  # requests/HTTP errors of every kind
            raise ArchiveError(f"DICOMweb query of {self.url} failed: {exc}") from exc
        return reports

    def has_series(self, study_uid: str, series_uid: str) -> bool:
        """Whether the archive still holds the series (QIDO-RS)."""
        try:
            found = self.client.search_for_series(
                study_instance_uid=study_uid, search_filters={"SeriesInstanceUID": series_uid}
            )
        except Exception as exc:  # requests/HTTP errors of every kind
            raise ArchiveError(f"DICOMweb query of {self.url} failed: {exc}") from exc
        return bool(found)

    def results(self, wanted: ResultFilter) -> list[ResultRecord]:
        records = [r for sr in self.result_reports(wanted) for r in records_from_sr(sr)]
        return [r for r in records if wanted.accepts(r)]

    def priors(self, patient_id: str, before: dt.date) -> list[Prior]:
        """Structure masses from the patient's earlier studies in the archive (only those that
        passed QC, or predate it: a doubtful mass is no baseline)."""
        wanted = ResultFilter(
            patient_id=patient_id, until=before - dt.timedelta(days=1), quantity="mass"
        )
        priors = []
        for record in self.results(wanted):
            date = dt.datetime.strptime(record.study_date, "%Y%m%d").date()
            if record.value is not None and record.qc in (None, "pass"):
                priors.append(Prior(record.study_uid, date, record.structure, record.value))
        return priors

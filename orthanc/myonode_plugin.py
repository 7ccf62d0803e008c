"""Orthanc Python plugin: forward each stable study to the myonode node, label it with the
node's status.

Orthanc calls `on_change` from its own threads, so the callback only queues the event; one
worker thread does the REST work through pyorthanc's internal client (the plugin's own
authorisation token, no stored credentials):

- a study becomes STABLE: its series that the node's profiles want (modality and SOP class,
  from the node's /api/wanted; the configured modalities while the node has not answered yet),
  that the node did not write and that were not already forwarded with the same instance
  count are sent to the node's DICOM modality as one asynchronous Orthanc job; the series left
  out (dose reports, presentation states, private non-image objects...) are listed, with the
  reason, in the study's `MyoNodeLeftOut` metadata, so one of them never fails the whole study's
  forwarding (a submission that fails and a failed
  job are retried with a growing delay; an event whose handling fails is retried a few times,
  then logged);
- once the job succeeded, the node's REST API is polled for the study's status, which is
  written to the study's `MyoNodeStatus` metadata until the node reports a final state (or
  "not received by the node" after `MissingPolls` answers 404). The node sends its results
  (SEG, SR, PDF) back with C-STORE, so they land in the same study.

Studies still being followed are kept in an Orthanc global property, so a restart of Orthanc
resumes following them. Needs the `MyoNode` configuration section (see archive.json) and
pyorthanc/httpx on the interpreter's path (PYTHONPATH=<venv>/lib/python3.11/site-packages).
"""

from __future__ import annotations

import json
import queue
import threading
import time

import httpx
import orthanc
import pyorthanc

STATUS = "MyoNodeStatus"  # study metadata: the node's status for the study
FORWARDED = "MyoNodeForwarded"  # series metadata: instance count when last forwarded
LEFT_OUT = "MyoNodeLeftOut"  # study metadata: the series not forwarded, and why (JSON)
PENDING_PROPERTY = 5120  # global property: studies being followed, as JSON
# The node's outputs' Manufacturer (myonode.encode.Device.manufacturer; the plugin cannot
# import the node): their series are never sent back to it.
OWN_MANUFACTURER = "myonode project"
EVENT_ATTEMPTS = 5  # tries to handle one Orthanc event before it is logged and dropped


class Forwarder:
    def __init__(self, config: dict) -> None:
        section = config.get("MyoNode", {})
        self.modality = section.get("NodeModality", "MYONODE")
        self.node_url = section.get("NodeUrl", "http://127.0.0.1:8080").rstrip("/")
        # The node's HTTP token: top-level `MyoNodeToken`, so it can live in credentials.json
        # beside RegisteredUsers (Orthanc refuses a section split across files).
        token = config.get("MyoNodeToken") or section.get("NodeToken")
        self.node_headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.modalities = set(section.get("Modalities", ["CT", "MR", "CR", "DX"]))
        self.poll_s = float(section.get("PollSeconds", 5))
        self.retry_max_s = float(section.get("RetryMaxSeconds", 300))
        self.missing_polls = int(section.get("MissingPolls", 12))
        self.events: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="myonode-forwarder")
        self.pending: dict[str, dict] = {}
        self.client: pyorthanc.Orthanc | None = None
        self.wanted_sop_classes: set[str] | None = None  # None: not known yet, not filtered

    # -- the worker thread -------------------------------------------------------------------

    def run(self) -> None:
        self.client = pyorthanc.get_internal_client()
        self.pending = json.loads(orthanc.GetGlobalProperty(PENDING_PROPERTY, "{}") or "{}")
        while not self.stop.is_set():
            try:
                self.step()
            except Exception as exc:  # keep the worker alive; the next step retries
                orthanc.LogWarning(f"myonode: {type(exc).__name__}: {exc}")
            self.stop.wait(self.poll_s)

    def step(self) -> None:
        changed = False
        failed = []
        while not self.events.empty():
            kind, study_id, attempts = self.events.get_nowait()
            try:
                if kind == "stable":
                    changed |= self.forward(study_id)
                elif self.pending.pop(study_id, None) is not None:
                    changed = True
            except Exception as exc:  # e.g. Orthanc busy: handle the event again next step
                changed = True  # forward() may have recorded the study before failing
                if attempts + 1 < EVENT_ATTEMPTS:
                    failed.append((kind, study_id, attempts + 1))
                    what = "retrying"
                else:
                    what = "dropped"
                orthanc.LogWarning(
                    f"myonode: {kind} study {study_id}, {what}: {type(exc).__name__}: {exc}"
                )
        for event in failed:
            self.events.put(event)
        now = time.time()
        for study_id, record in list(self.pending.items()):
            if record["next"] <= now:
                try:
                    self.follow(study_id, record)
                except Exception as exc:  # keep following the others; this one later
                    orthanc.LogWarning(f"myonode: study {study_id}: {type(exc).__name__}: {exc}")
                    self._retry_later(record)
                changed = True
        if changed:
            orthanc.SetGlobalProperty(PENDING_PROPERTY, json.dumps(self.pending))

    def forward(self, study_id: str) -> bool:
        """Send the study's new or grown series to the node; return whether it is followed."""
        try:
            study = self.client.get_studies_id(study_id)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:  # deleted since it became stable
                return False
            raise
        self._ask_node_what_it_wants()
        wanted, left_out = {}, []
        for series_id in study["Series"]:
            try:
                series = self.client.get_series_id(series_id)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 404:  # deleted meanwhile
                    continue
                raise
            tags = series["MainDicomTags"]
            if tags.get("Manufacturer", "").strip() == OWN_MANUFACTURER:
                continue
            reason = self._not_wanted(series)
            if reason:
                left_out.append(
                    {
                        "SeriesInstanceUID": tags.get("SeriesInstanceUID", ""),
                        "SeriesDescription": tags.get("SeriesDescription", ""),
                        "Modality": tags.get("Modality", ""),
                        "Reason": reason,
                    }
                )
                continue
            count = len(series["Instances"])
            if self._metadata("series", series_id).get(FORWARDED) != str(count):
                wanted[series_id] = count
        self._report_left_out(study_id, left_out)
        if not wanted:
            return False
        # Followed from here on: sent only once Orthanc's job for it is known to have succeeded.
        self.pending[study_id] = record = {
            "uid": study["MainDicomTags"]["StudyInstanceUID"],
            "series": wanted,
            "job": None,
            "sent": False,
            "attempts": 0,
            "missing": 0,
            "next": 0.0,
        }
        self.submit(study_id, record)
        return True

    def _ask_node_what_it_wants(self) -> None:
        """The modalities and SOP classes the node's profiles select; kept from the last
        answer (or the configured modalities alone) while the node does not answer."""
        try:
            response = httpx.get(
                f"{self.node_url}/api/wanted", headers=self.node_headers, timeout=10
            )
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            orthanc.LogWarning(f"myonode: the node did not say which series it wants: {exc}")
            return
        if answer.get("modalities") is not None:
            self.modalities = set(answer["modalities"])
        self.wanted_sop_classes = set(answer.get("sop_classes") or [])

    def _not_wanted(self, series: dict) -> str | None:
        """Why the node would not take this series (None: forward it)."""
        modality = series["MainDicomTags"].get("Modality", "")
        if modality not in self.modalities:
            return f"modality {modality or '(none)'} is not one the node measures"
        if self.wanted_sop_classes is None or not series["Instances"]:
            return None
        instance = series["Instances"][0]
        sop_class = self._metadata("instances", instance).get("SopClassUid", "")
        if sop_class not in self.wanted_sop_classes:
            return f"SOP class {sop_class or '(unknown)'} is not one the node takes"
        return None

    def _report_left_out(self, study_id: str, left_out: list[dict]) -> None:
        text = json.dumps(left_out, ensure_ascii=False)
        if self._metadata("studies", study_id).get(LEFT_OUT, "[]") == text:
            return
        self.client.put_studies_id_metadata_name(study_id, LEFT_OUT, text)
        for item in left_out:
            orthanc.LogWarning(
                f"myonode: study {study_id}: series {item['SeriesInstanceUID']} "
                f"({item['Modality']} {item['SeriesDescription']}) not forwarded: "
                f"{item['Reason']}"
            )

    def submit(self, study_id: str, record: dict) -> None:
        """Start the forwarding job; if Orthanc refuses, try again later with backoff."""
        record["job"] = None
        try:
            job = self.client.post_modalities_id_store(
                self.modality, json={"Resources": list(record["series"]), "Synchronous": False}
            )
        except httpx.HTTPError as exc:
            self.label(study_id, f"forwarding failed ({type(exc).__name__})")
            orthanc.LogWarning(f"myonode: forwarding study {study_id}: {exc}")
            self._retry_later(record)
            return
        record["job"] = job["ID"]
        self.label(study_id, "forwarding to the node")

    def follow(self, study_id: str, record: dict) -> None:
        """Advance one followed study: its forwarding job, then the node's status."""
        # Records saved before "sent" existed: a job was pending, or it had succeeded.
        record.setdefault("sent", record["job"] is None)
        if not record["sent"]:
            if record["job"] is None:
                self.submit(study_id, record)
            elif self._forwarded(study_id, record):
                record["attempts"] = 0
            return
        try:
            response = httpx.get(
                f"{self.node_url}/api/studies/{record['uid']}",
                headers=self.node_headers,
                timeout=10,
            )
            if response.status_code != 404:
                response.raise_for_status()
        except httpx.HTTPError as exc:
            self.label(study_id, f"node status unavailable ({type(exc).__name__})")
            self._retry_later(record)
            return
        study = {"status": "sent to the node", "final": False}
        if response.status_code == 404:
            record["missing"] = record.get("missing", 0) + 1
            if record["missing"] >= self.missing_polls:  # the node lost or refused it
                study = {"status": "not received by the node", "final": True}
        else:
            record["missing"] = 0
            study = response.json()
        record["attempts"], record["next"] = 0, time.time() + self.poll_s
        if not self.label(study_id, study["status"]) or study["final"]:
            self.pending.pop(study_id, None)

    def _forwarded(self, study_id: str, record: dict) -> bool:
        try:
            job = self.client.get_jobs_id(record["job"])
        except httpx.HTTPError:  # dropped from Orthanc's job history: send again
            self.submit(study_id, record)
            return False
        if job["State"] == "Success":
            for series_id, count in record["series"].items():
                try:
                    self.client.put_series_id_metadata_name(series_id, FORWARDED, str(count))
                except httpx.HTTPError:
                    pass  # the series was deleted meanwhile
            record["job"], record["sent"] = None, True
            self.label(study_id, "sent to the node")
            return True
        if job["State"] == "Failure":  # e.g. the node is down: resubmit, then back off
            self.label(study_id, f"forwarding failed ({job.get('ErrorDescription', '')})")
            self.client.post_jobs_id_resubmit(record["job"], json={})
            self._retry_later(record)
        return False

    def _retry_later(self, record: dict) -> None:
        record["attempts"] += 1
        delay = min(self.retry_max_s, self.poll_s * 2 ** record["attempts"])
        record["next"] = time.time() + delay

    def label(self, study_id: str, status: str) -> bool:
        """Write the status to the study's metadata; False if the study no longer exists."""
        try:
            if self._metadata("studies", study_id).get(STATUS) != status:
                self.client.put_studies_id_metadata_name(study_id, STATUS, status)
        except httpx.HTTPError:  # pyorthanc raises this for a 404 too
            return False
        return True

    def _metadata(self, level: str, resource_id: str) -> dict[str, str]:
        get = getattr(self.client, f"get_{level}_id_metadata")
        return get(resource_id, params={"expand": ""})

    # -- Orthanc's callback ------------------------------------------------------------------

    def on_change(self, change_type, level, resource_id: str) -> None:
        if change_type == orthanc.ChangeType.ORTHANC_STARTED:
            self.thread.start()
        elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
            self.stop.set()
            if self.thread.is_alive():
                self.thread.join()
        elif level == orthanc.ResourceType.STUDY:
            if change_type == orthanc.ChangeType.STABLE_STUDY:
                self.events.put(("stable", resource_id, 0))
            elif change_type == orthanc.ChangeType.DELETED:
                self.events.put(("deleted", resource_id, 0))


forwarder = Forwarder(json.loads(orthanc.GetConfiguration()))
orthanc.RegisterOnChangeCallback(forwarder.on_change)

"""The Orthanc plugin's forwarding logic without Orthanc: the `orthanc` module is a stub and
pyorthanc's client a fake that fails where told. (tests/test_archive.py runs it in Orthanc.)"""

import importlib.util
import json
import sys
import types

import httpx
import pytest

from myonode.encode import Device
from myonode.route.profiles import load_profiles, wanted_series

from support import REPO


def http_error(status: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "http://orthanc.test")
    return httpx.HTTPStatusError(
        f"{status}", request=request, response=httpx.Response(status, request=request)
    )


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class FakeOrthanc:
    """pyorthanc's client over one study; `fail` maps a method name to errors to raise, once
    each, before it answers."""

    def __init__(self, series: dict[str, dict]) -> None:
        self.series = series
        self.metadata: dict[str, dict[str, str]] = {}
        self.fail: dict[str, list[Exception]] = {}
        self.stores: list[dict] = []
        self.job_state = "Running"

    def _maybe_fail(self, name: str) -> None:
        if self.fail.get(name):
            raise self.fail[name].pop(0)

    def get_studies_id(self, study_id):
        return {"Series": list(self.series), "MainDicomTags": {"StudyInstanceUID": "1.2.3"}}

    def get_series_id(self, series_id):
        self._maybe_fail("get_series_id")
        return self.series[series_id]

    def get_series_id_metadata(self, series_id, params=None):
        return dict(self.metadata.get(series_id, {}))

    def put_series_id_metadata_name(self, series_id, name, value):
        self.metadata.setdefault(series_id, {})[name] = value

    get_studies_id_metadata = get_series_id_metadata
    put_studies_id_metadata_name = put_series_id_metadata_name

    def get_instances_id_metadata(self, instance_id, params=None):
        return {"SopClassUid": CT_IMAGE_STORAGE}

    def post_modalities_id_store(self, modality, json=None):
        self._maybe_fail("post_modalities_id_store")
        self.stores.append(json)
        return {"ID": f"job-{len(self.stores)}"}

    def get_jobs_id(self, job_id):
        return {"State": self.job_state}


@pytest.fixture
def plugin(monkeypatch):
    """(the plugin module, its warnings); poll and retry delays are 0, 3 polls of 404 at most."""
    warnings: list[str] = []
    orthanc = types.ModuleType("orthanc")
    properties: dict = {}
    orthanc.GetGlobalProperty = lambda key, default: properties.get(key, default)
    orthanc.SetGlobalProperty = properties.__setitem__
    orthanc.LogWarning = warnings.append
    orthanc.GetConfiguration = lambda: json.dumps(
        {"MyoNode": {"PollSeconds": 0, "MissingPolls": 3}, "MyoNodeToken": "node-token"}
    )
    orthanc.RegisterOnChangeCallback = lambda callback: None
    orthanc.ChangeType = types.SimpleNamespace(
        ORTHANC_STARTED=1, ORTHANC_STOPPED=2, STABLE_STUDY=3, DELETED=4
    )
    orthanc.ResourceType = types.SimpleNamespace(STUDY=5)
    monkeypatch.setitem(sys.modules, "orthanc", orthanc)
    spec = importlib.util.spec_from_file_location(
        "myonode_plugin_under_test", REPO / "orthanc" / "myonode_plugin.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, warnings


def node_answers(monkeypatch, module, status: int, body: dict | None = None) -> list[str]:
    """The node's REST API as the plugin sees it; returns the study URLs asked. It answers
    only requests with the node's token (MyoNodeToken), as the node does; what the node wants
    forwarded is answered as a node with the built-in profiles answers it."""
    asked = []

    def get(url, timeout, headers):
        request = httpx.Request("GET", url)
        if headers.get("Authorization") != "Bearer node-token":
            return httpx.Response(401, request=request)
        if url.endswith("/api/wanted"):
            return httpx.Response(200, json=wanted_series(load_profiles()), request=request)
        asked.append(url)
        return httpx.Response(status, json=body, request=request)

    monkeypatch.setattr(module.httpx, "get", get)
    return asked


def ct(instances: int = 2, manufacturer: str = "SIEMENS") -> dict:
    tags = {"Modality": "CT", "Manufacturer": manufacturer}
    return {"MainDicomTags": tags, "Instances": [f"i{n}" for n in range(instances)]}


def stable(module, client, study_id: str = "st1"):
    forwarder = module.forwarder
    forwarder.client = client
    forwarder.on_change(
        module.orthanc.ChangeType.STABLE_STUDY, module.orthanc.ResourceType.STUDY, study_id
    )
    return forwarder


def test_a_refused_submission_is_retried_and_never_labelled_sent(plugin, monkeypatch):
    module, warnings = plugin
    client = FakeOrthanc({"s1": ct()})
    client.fail["post_modalities_id_store"] = [http_error(500)] * 3
    asked = node_answers(monkeypatch, module, 404)
    forwarder = stable(module, client)
    forwarder.step()  # refused on the event, and again when followed (no delay here)
    assert client.metadata["st1"]["MyoNodeStatus"].startswith("forwarding failed")
    assert forwarder.pending["st1"]["sent"] is False
    forwarder.step()  # refused a third time; the node is not asked about it
    assert asked == [] and client.stores == []
    forwarder.step()  # accepted
    assert client.stores == [{"Resources": ["s1"], "Synchronous": False}]
    assert client.metadata["st1"]["MyoNodeStatus"] == "forwarding to the node"
    forwarder.step()  # job still running: the node is not asked yet
    assert asked == []
    client.job_state = "Success"
    forwarder.step()
    assert client.metadata["st1"]["MyoNodeStatus"] == "sent to the node"
    assert client.metadata["s1"]["MyoNodeForwarded"] == "2"
    assert any("forwarding study st1" in w for w in warnings)


def test_the_node_never_knowing_the_study_ends_following_it(plugin, monkeypatch):
    module, _ = plugin
    client = FakeOrthanc({"s1": ct()})
    client.job_state = "Success"
    asked = node_answers(monkeypatch, module, 404)
    forwarder = stable(module, client)
    for _ in range(10):
        forwarder.step()
    assert len(asked) == 3  # MissingPolls
    assert client.metadata["st1"]["MyoNodeStatus"] == "not received by the node"
    assert forwarder.pending == {}


def test_a_final_status_from_the_node_ends_following(plugin, monkeypatch):
    module, _ = plugin
    client = FakeOrthanc({"s1": ct()})
    client.job_state = "Success"
    node_answers(monkeypatch, module, 200, {"status": "done", "final": True})
    forwarder = stable(module, client)
    for _ in range(3):
        forwarder.step()
    assert client.metadata["st1"]["MyoNodeStatus"] == "done"
    assert forwarder.pending == {}


def test_an_error_while_handling_a_stable_study_retries_the_event(plugin, monkeypatch):
    module, warnings = plugin
    client = FakeOrthanc({"s1": ct(), "s2": ct(3)})
    client.fail["get_series_id"] = [http_error(500), http_error(404)]
    node_answers(monkeypatch, module, 404)
    forwarder = stable(module, client)
    forwarder.step()  # Orthanc answers 500: the event is kept
    assert "st1" not in forwarder.pending
    assert any("retrying" in w for w in warnings)
    forwarder.step()  # s1 deleted meanwhile (404): s2 is forwarded
    assert client.stores == [{"Resources": ["s2"], "Synchronous": False}]


def test_an_event_failing_every_time_is_dropped_with_a_warning(plugin, monkeypatch):
    module, warnings = plugin
    client = FakeOrthanc({"s1": ct()})
    client.fail["get_series_id"] = [http_error(500)] * 10
    forwarder = stable(module, client)
    for _ in range(8):
        forwarder.step()
    assert forwarder.events.empty() and forwarder.pending == {}
    assert sum("retrying" in w for w in warnings) == module.EVENT_ATTEMPTS - 1
    assert sum("dropped" in w for w in warnings) == 1


def test_the_nodes_own_results_are_not_sent_back(plugin, monkeypatch):
    module, _ = plugin
    assert module.OWN_MANUFACTURER == Device().manufacturer
    client = FakeOrthanc({"s1": ct(), "seg": ct(1, manufacturer=Device().manufacturer)})
    node_answers(monkeypatch, module, 404)
    stable(module, client).step()
    assert client.stores == [{"Resources": ["s1"], "Synchronous": False}]

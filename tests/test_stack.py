"""The bare-metal deployment, run for real: deploy/local_stack.py starts Orthanc, the node and
the viewer with their systemd units' commands and the documented configuration files; a study
sent to Orthanc comes back measured; the dashboard and OHIF are checked in headless Chromium
(Debian's chromium driven by Playwright, no browser download)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pydicom
import pytest
from matplotlib.image import imread
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from myonode.app.demo.shared_data import shared_data_dir
from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.core.volume import load_nifti, with_positive_axes

from support import (
    REPO,
    free_port,
    require_python_plugin,
    require_tool,
    scanner_sends,
    wait_for_port,
    wait_until,
)

OHIF_DIR = REPO / ".ohif"
SCREENSHOTS = REPO / "out"


def get_json(url: str, token: str):
    with urllib.request.urlopen(authorized(url, token), timeout=10) as response:
        return json.load(response)


def authorized(url: str, token: str) -> urllib.request.Request:
    """A request with the stack's HTTP token (authentication is on, as installed)."""
    return urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The three services of deploy/systemd, started by deploy/local_stack.py, and one CT
    study sent to Orthanc and measured."""
    require_tool("Orthanc")
    require_python_plugin()
    if not (OHIF_DIR / "index.html").is_file():
        pytest.skip(f"OHIF is not installed in {OHIF_DIR}: run deploy/install-ohif.sh")
    directory = tmp_path_factory.mktemp("stack")
    ports = {
        name: free_port()
        for name in ("orthanc_dicom", "orthanc_http", "node_dicom", "node_http", "viewer")
    }
    command = [
        sys.executable,
        str(REPO / "deploy" / "local_stack.py"),
        str(directory / "run"),
        "--stable-seconds",
        "1",
    ]
    for name, port in ports.items():
        command += [f"--{name.replace('_', '-')}-port", str(port)]
    with (directory / "stack.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(ports["viewer"], timeout=120)
        paths = ct_study(directory / "ct")
        scanner_sends(paths, "ORTHANC", ports["orthanc_dicom"])
        study_uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
        node = f"http://127.0.0.1:{ports['node_http']}"
        token = (directory / "run" / "etc" / "http-token").read_text().strip()
        wait_until(
            lambda: study_status(node, study_uid, token) == "done", timeout=180, interval=0.5
        )
        yield {
            "token": token,
            "ports": ports,
            "directory": directory / "run",
            "study_uid": study_uid,
            "node": node,
            "viewer": f"http://127.0.0.1:{ports['viewer']}",
            "log": directory / "stack.log",
        }
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(60)


def ct_study(directory):
    """The real upper-abdomen CT when the shared data is here (a truer screenshot), else the
    phantom; nothing below depends on which."""
    shared = shared_data_dir()
    if shared is None:
        array, geometry = abdomen_phantom(shape=(16, 192, 192), pixel_mm=2.0, slice_mm=5.0)
        return write_ct_series(array, geometry, directory, seed="stack-browser")
    volume = with_positive_axes(load_nifti(shared / "ct" / "upper_abdomen_ct.nii.gz"))
    # Orthanc 1.10 cannot serve frames of a 1-bit SEG whose Columns are not a multiple of 8
    # ("Bad number of columns for a black-and-white image"); scanners' matrices are. This
    # CT is 122 columns wide: pad it with air on the right to 128.
    columns = volume.array.shape[2]
    array = np.pad(volume.array, ((0, 0), (0, 0), (0, -columns % 8)), constant_values=-1000)
    patient = Patient(sex="M", age_years=58, height_m=1.78, weight_kg=82.0)
    return write_ct_series(array, volume.geometry, directory, patient, seed="stack-real")


def study_status(node: str, study_uid: str, token: str) -> str | None:
    try:
        return get_json(f"{node}/api/studies/{study_uid}", token)["status"]
    except OSError:  # not received yet (404) or not up yet
        return None


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (see deploy/debian-packages.txt)")
    playwright = pytest.importorskip("playwright.sync_api").sync_playwright().start()
    browser = playwright.chromium.launch(
        executable_path=chromium,
        args=[
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",
            "--disable-dev-shm-usage",
        ],
    )
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def page(browser, request, stack):
    """A page whose browser answers the node's and the viewer's basic-auth challenge with
    the token, as a user types it."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900},
        http_credentials={"username": "staff", "password": stack["token"]},
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:  # what the browser showed, for the log
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"failed-{request.node.name}.png")
    context.close()
    assert errors == [], errors


def test_the_units_commands_run_the_archive_node_and_viewer(stack):
    output = stack["log"].read_text()
    for command in ("Orthanc --logdir=", "myonode serve", "myonode viewer"):
        assert command in output
    health = get_json(f"{stack['node']}/api/health", stack["token"])
    assert health["status"] == "ok" and health["counts"]["outbox"] == {"sent": 3}
    # DICOM TLS is on as installed: Orthanc forwarded the study over it (UseDicomTls), and
    # the node's listener refuses plain DICOM.
    require_tool("echoscu")
    node_dicom = str(stack["ports"]["node_dicom"])
    plain = subprocess.run(
        ["echoscu", "-aet", "ORTHANC", "-aec", "MYONODE", "127.0.0.1", node_dicom],
        capture_output=True,
        timeout=30,
    )
    assert plain.returncode != 0
    # Authentication is on as installed: without the token, the API and the viewer refuse.
    for url in (f"{stack['node']}/api/studies", f"{stack['viewer']}/dicom-web/studies"):
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, timeout=10)
    credentials = json.loads((stack["directory"] / "etc/orthanc/credentials.json").read_text())
    import pyorthanc

    orthanc = pyorthanc.Orthanc(
        f"http://127.0.0.1:{stack['ports']['orthanc_http']}",
        username="myonode",
        password=credentials["RegisteredUsers"]["myonode"],
    )
    assert {"dicom-web", "python"} <= set(orthanc.get_plugins())
    [study_id] = orthanc.get_studies()
    wait_until(  # the plugin labels the study with the node's status
        lambda: (
            orthanc.get_studies_id_metadata(study_id, params={"expand": ""}).get("MyoNodeStatus")
            == "done"
        )
    )


def test_dashboard_shows_the_study_its_overlay_and_a_viewer_link(stack, page):
    uid = stack["study_uid"]
    page.goto(f"{stack['node']}/")
    row = page.locator(f'tr.study[data-uid="{uid}"]')
    row.wait_for(timeout=30000)
    assert "done" in row.inner_text() and "ct_muscle" in row.inner_text()
    row.click()
    overlay = page.locator("img.overlay").first
    overlay.wait_for(timeout=30000)
    page.wait_for_function(
        "() => [...document.images].some(i => i.classList.contains('overlay') && i.complete"
        " && i.naturalWidth > 0)"
    )
    png = imread(io.BytesIO(overlay.screenshot()))[..., :3]
    assert (colour(png) > 0.15).mean() > 0.005, "no coloured overlay in the key image"
    results = page.locator("#results tbody").inner_text()
    assert "volume" in results and "max_csa" in results
    assert "sent" in page.locator("#study-outbox tbody").inner_text()
    link = page.locator("#overlays a.viewer-link").first
    assert link.get_attribute("href") == f"{stack['viewer']}/viewer?StudyInstanceUIDs={uid}"
    with page.expect_popup() as popup:
        link.click()
    viewer = popup.value
    viewer.wait_for_selector("canvas.cornerstone-canvas", timeout=60000)
    metrics = urllib.request.urlopen(authorized(f"{stack['node']}/metrics", stack["token"]))
    metrics = metrics.read().decode()
    assert 'myonode_outbox{state="sent"} 3.0' in metrics


def colour(rgb: np.ndarray) -> np.ndarray:
    """Saturation-like measure: 0 for grey (R = G = B), up to 1 for pure colours."""
    return rgb.max(axis=-1) - rgb.min(axis=-1)


def open_study(page, stack) -> None:
    """Open the study in OHIF and wait until every image of the CT is loaded."""
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(f"{stack['viewer']}/viewer?StudyInstanceUIDs={stack['study_uid']}")
    page.wait_for_selector("canvas.cornerstone-canvas", timeout=60000)
    wait_until(lambda: any("displaySetsToAllImages" in m for m in console), timeout=60)
    for prompt in ("Skip all", "Confirm and hide"):  # OHIF's first-visit tour and notice
        button = page.get_by_text(prompt, exact=True)
        button.wait_for(timeout=30000)
        button.click()


VIEWPORT = ".cornerstone-viewport-element"


def viewport_pixels(page, box: dict) -> np.ndarray:
    """The viewport's pixels (OHIF re-creates the element as it loads, so clip the page)."""
    return imread(io.BytesIO(page.screenshot(clip=box)))[..., :3]


def test_ohif_draws_the_segmentation_over_the_ct(stack, page):
    open_study(page, stack)
    page.wait_for_function(  # the CT is drawn: the canvas is not blank
        "() => { const c = document.querySelector('canvas.cornerstone-canvas');"
        " return c && c.width > 0; }"
    )
    page.wait_for_timeout(1000)
    box = page.locator(VIEWPORT).first.bounding_box()
    before = viewport_pixels(page, box)
    assert (before.mean(axis=-1) > 0.2).mean() > 0.05, "the CT is not rendered"
    page.get_by_text("SEG", exact=True).dblclick()
    page.get_by_role("button", name="Yes").click()  # "Do you want to open this Segmentation?"

    def overlay_pixels():
        if page.locator(VIEWPORT).first.bounding_box() != box:
            return None  # the layout is changing
        after = viewport_pixels(page, box)
        new = (colour(after) > 0.15) & (colour(before) < 0.05)
        return (after, new) if new.mean() > 0.01 else None

    _, new = wait_until(overlay_pixels, timeout=60, interval=1)
    # The colour lies on the CT: where the image showed the body, not black air or padding.
    was_body = before[new].mean(axis=-1) > 0.05  # not air (0 in this window) or background
    assert was_body.mean() > 0.95
    assert (colour(before) > 0.15).mean() < 0.02  # a grey image before (the frame aside)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "ohif-seg-overlay.png")


def area_label(page, timeout_ms: float) -> str | None:
    """The text of the first drawn measurement label starting "Area:" (SVG layer), if any."""
    try:
        handle = page.wait_for_function(
            "() => [...document.querySelectorAll('svg text')].map(t => t.textContent)"
            ".find(t => t.startsWith('Area:'))",
            timeout=timeout_ms,
        )
    except PlaywrightTimeout:
        return None
    return handle.json_value()


def test_ohif_reads_the_sr_in_its_sr_viewport(stack, page):
    results = get_json(
        f"{stack['node']}/api/results?study_uid={stack['study_uid']}", stack["token"]
    )
    areas = [f"Area: {r['value']:.2f} cm2" for r in results if r["quantity"] == "max_csa"]
    open_study(page, stack)
    page.get_by_text("SR", exact=True).dblclick()
    label = area_label(page, timeout_ms=30000)
    for _ in range(3):
        if label is not None:
            break
        # Seen under load (full clean-clone runs): OHIF had loaded the measurements and shown
        # their image without drawing them. Do what a reader would: step to the next
        # measurement and back, and scroll one image away and back, so the viewport renders
        # again (on the phantom every measurement lies on the same image, so stepping alone
        # does not move it).
        page.locator('[data-cy="viewport-action-arrows-right"]').click()
        page.locator('[data-cy="viewport-action-arrows-left"]').click()
        box = page.locator(VIEWPORT).first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, 120)
        page.mouse.wheel(0, -120)
        label = area_label(page, timeout_ms=30000)
    assert label is not None, "OHIF drew no SR measurement"
    assert any(label.startswith(area) for area in areas), (label, areas)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "ohif-sr.png")


def test_ohif_opens_the_pdf_report(stack, page):
    """OHIF hands the Encapsulated PDF, retrieved through the viewer, to the browser's PDF
    viewer (a plugin whose contents the DOM does not show): check the document it got."""
    open_study(page, stack)
    page.get_by_text("DOC", exact=True).dblclick()
    embedded = page.locator('object[type="application/pdf"]')
    embedded.wait_for(timeout=60000)
    head = page.evaluate(
        "async url => new TextDecoder().decode((await (await fetch(url)).arrayBuffer())"
        ".slice(0, 5))",
        embedded.get_attribute("data"),
    )
    assert head == "%PDF-"


def test_viewer_proxies_wado_uri_as_the_client_accepts(stack):
    """WADO-URI through the viewer: the instance, uncompressed for a client that asked for
    no content encoding, and the archive's credentials never needed by the client."""
    detail = get_json(f"{stack['node']}/api/studies/{stack['study_uid']}", stack["token"])
    [seg] = [o for o in detail["outbox"] if o["sop_class_uid"].endswith(".66.4")]
    series = pydicom.dcmread(seg["path"], stop_before_pixels=True).SeriesInstanceUID
    query = (
        f"requestType=WADO&studyUID={stack['study_uid']}&seriesUID={series}"
        f"&objectUID={seg['sop_uid']}&contentType=application/dicom"
    )
    with urllib.request.urlopen(
        authorized(f"{stack['viewer']}/wado?{query}", stack["token"])
    ) as response:
        body = response.read()
        assert response.headers.get("content-encoding") is None
    assert body[128:132] == b"DICM"
    assert pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == seg["sop_uid"]
    # Neither the node nor the viewer wrote the archive's password into its log.
    credentials = json.loads((stack["directory"] / "etc/orthanc/credentials.json").read_text())
    password = credentials["RegisteredUsers"]["myonode"]
    for name in ("node", "viewer"):
        assert password not in (stack["directory"] / "log" / f"{name}.log").read_text(), name

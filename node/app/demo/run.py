"""`myonode demo`: the whole flow on loopback, on embedded defaults.

Starts a node and a receiving archive, sends it a CT study (a real CT from the shared data
when present, a generated phantom otherwise), waits for the SEG and SR to come back, prints
the results and where the files are. Exit status 0 only if everything arrived.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from myonode.app.demo.peer import StorePeer
from myonode.app.demo.shared_data import shared_data_dir
from myonode.app.demo.synthetic import Patient, abdomen_phantom, write_ct_series
from myonode.app.service import Node
from myonode.core.config import Peer, Settings, load_settings
from myonode.core.volume import load_nifti, with_positive_axes
from myonode.dispatch.scu import describe, send_files
from myonode.store.index import Index

PEER_AET = "DEMOPACS"


@dataclass
class DemoOutcome:
    ok: bool
    message: str
    source: str
    study_uid: str | None
    received: list[Path]
    index: Index | None


def make_study(directory: Path) -> tuple[list[Path], str]:
    """Write the demo CT series; return its files and a description of where it came from."""
    shared = shared_data_dir()
    real = shared / "ct" / "upper_abdomen_ct.nii.gz" if shared else None
    if real is not None and real.exists():
        volume = with_positive_axes(load_nifti(real))
        patient = Patient(
            patient_id="MYO-DEMO-REALCT",
            name="Demo^UpperAbdomenCT",
            sex=None,
            age_years=None,
            height_m=None,
            weight_kg=None,
        )
        paths = write_ct_series(
            volume.array, volume.geometry, directory, patient, seed="demo-real-ct"
        )
        return paths, f"real CT {real} (demographics unknown)"
    array, geometry = abdomen_phantom()
    return write_ct_series(array, geometry, directory, seed="demo-phantom"), "generated phantom"


def demo_settings(out_dir: Path, peer_port: int, base: Settings | None = None) -> Settings:
    base = base or load_settings(environ={})
    return base.model_copy(
        update={
            "dicom": base.dicom.model_copy(update={"port": 0, "bind": "127.0.0.1"}),
            # Loopback, a throw-away node: no token to hand out (the only place auth is off).
            "http": base.http.model_copy(
                update={
                    "port": 0,
                    "bind": "127.0.0.1",
                    "auth": base.http.auth.model_copy(update={"enabled": False}),
                }
            ),
            "storage": base.storage.model_copy(
                update={"data_dir": out_dir / "node", "min_free_mb": 0}
            ),
            "assemble": base.assemble.model_copy(
                update={"quiet_seconds": 1.0, "poll_seconds": 0.2}
            ),
            "peers": {PEER_AET: Peer(host="127.0.0.1", port=peer_port)},
            "dispatch": base.dispatch.model_copy(
                update={"destinations": ["calling"], "poll_seconds": 0.2}
            ),
        }
    )


def run_demo(out_dir: Path, timeout_s: float = 600.0) -> DemoOutcome:
    for sub in ("node", "peer", "study"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
    paths, source = make_study(out_dir / "study")
    peer = StorePeer(out_dir / "peer", PEER_AET)
    peer_port = peer.start()
    settings = demo_settings(out_dir, peer_port)
    node = Node(settings)
    node.start()
    try:
        items = [describe(p) for p in paths]
        results = send_files(items, PEER_AET, settings.dicom.ae_title, "127.0.0.1", node.port)
        failed = [r for r in results if not r.ok]
        if failed:
            return DemoOutcome(
                False,
                f"{len(failed)} instances refused by the node: {failed[0].comment}",
                source,
                None,
                [],
                node.index,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            counts = node.index.counts()
            if counts["jobs"].get("failed"):
                error = node.index.jobs(state="failed")[0].error
                return DemoOutcome(False, f"job failed: {error}", source, None, [], node.index)
            if sorted(peer.modalities()) == ["DOC", "SEG", "SR"] and not counts["outbox"].get(
                "pending"
            ):
                break
            time.sleep(0.2)
        else:
            return DemoOutcome(
                False, f"no SEG+SR back within {timeout_s:.0f} s", source, None, [], node.index
            )
        study_uid = node.index.study_uids()[0]
        received = sorted((out_dir / "peer").glob("*.dcm"))
        return DemoOutcome(
            True, "SEG, SR and PDF report delivered", source, study_uid, received, node.index
        )
    finally:
        node.stop()
        peer.stop()

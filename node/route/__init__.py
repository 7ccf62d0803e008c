"""Routing: which series of a study feed which pipeline, and why (`dicom_profiles/*.yaml`).

Modules, one concept each: `series` (facts from headers), `kernels`, `contrast`, `dixon`
(stations), `profiles` (schema and loading), `rules` (one profile on one series), `select` (one
best input per pipeline), `explain` (tables and JSON). This module is the I/O edge: it turns
index rows or a folder of files into routing units. Routing never loads a model: whether a
pipeline can run, and its version, come from `myonode.pipelines`.

May import `pipelines`, `store`, `core` and `dicom`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from myonode.pipelines import VersionOf
from myonode.route.profiles import Profile, ProfileError, load_profiles
from myonode.route.select import AlreadyDone, Sampler, StudyRouting, default_sampler, route_study
from myonode.route.series import describe_study
from myonode.store.repository import Store

__all__ = [
    "Profile",
    "ProfileError",
    "StudyRouting",
    "folder_studies",
    "load_profiles",
    "route_indexed_study",
    "route_rows",
    "route_study",
]


def route_rows(
    study_uid: str,
    rows: Sequence[Any],
    profiles: Sequence[Profile],
    version_of: VersionOf,
    already_done: AlreadyDone | None = None,
    sampler: Sampler | None = default_sampler,
) -> StudyRouting:
    """Route instance rows (index rows or `folder_studies` rows) of one study."""
    units = describe_study([dict(row) for row in rows])
    return route_study(study_uid, units, profiles, version_of, already_done, sampler)


def route_indexed_study(
    index: Store,
    study_uid: str,
    profiles: Sequence[Profile],
    version_of: VersionOf,
    already_done: AlreadyDone | None = None,
    sampler: Sampler | None = default_sampler,
) -> StudyRouting:
    """Route a study from the index. Instances of its series that were filed under another
    study are included, so a Series Instance UID reused across studies is seen and refused."""
    rows = index.routing_instances(study_uid)
    return route_rows(study_uid, rows, profiles, version_of, already_done, sampler)


def folder_studies(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """Instance rows by study from the DICOM files under `folder`, read without indexing.

    Files with empty UIDs are kept (grouped under empty identifiers) so that `explain` shows
    the decision the node makes for them instead of skipping them.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from myonode.dicom.headers import routing_tags

    studies: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, AttributeError, EOFError):
            continue
        if "SOPClassUID" not in ds and "Modality" not in ds:
            continue
        study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
        sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip() or f"<no UID: {path.name}>"
        studies[study_uid][sop_uid] = {
            "sop_uid": sop_uid,
            "series_uid": str(ds.get("SeriesInstanceUID", "") or "").strip(),
            "study_uid": study_uid,
            "sop_class_uid": str(ds.get("SOPClassUID", "") or "").strip(),
            "tags": routing_tags(ds),
            "path": str(path),
            "sha256": "",
        }
    return {study: list(rows.values()) for study, rows in studies.items()}

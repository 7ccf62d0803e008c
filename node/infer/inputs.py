"""Turn a job's inputs (role → series UIDs, as routing recorded them) into one Volume.

- ``image``: one slice series, assembled as before (`volume.load_series`);
- ``water`` (+ ``fat``): Dixon stations in station order, each water/fat pair loaded on its
  own grid, checked to match, then fused (`routing.dixon.fuse_stations`), water in `array` and
  fat in `channels["fat"]`;
- ``radiograph`` + ``instances``: one image of a radiograph series (`routing.cxr`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from myonode.core.radiograph import load_radiograph
from myonode.core.volume import Volume, VolumeError, load_series
from myonode.infer.fusion import fuse_stations

# series UID → its files; the index provides it (`Index.series_instances`)
FilesOf = Callable[[str], Sequence[Path]]


def load_dixon(stations: Mapping[str, Sequence[Sequence[Path]]]) -> Volume:
    """Fuse Dixon stations: `stations[role][n]` are the files of station n's `role` series."""
    water = stations["water"]
    others = {role: files for role, files in stations.items() if role != "water"}
    volumes = []
    for n, files in enumerate(water):
        volume = load_series(files)
        for role, series in others.items():
            channel = load_series(series[n])
            if channel.array.shape != volume.array.shape or not np.allclose(
                channel.geometry.affine, volume.geometry.affine, atol=1e-3
            ):
                raise VolumeError(f"station {n + 1}: the {role} series is not on the water grid")
            volume.channels[role] = channel.array
        volumes.append(volume)
    if len(volumes) == 1:
        return volumes[0]
    return fuse_stations(volumes)


def load_one_radiograph(paths: Sequence[Path]) -> Volume:
    """The radiograph a job measures: exactly one file, or a clear error."""
    if len(paths) != 1:
        raise VolumeError(f"expected one radiograph, found {len(paths)}")
    return load_radiograph(paths[0])


def load_inputs(inputs: Mapping[str, Sequence[str]], files_of: FilesOf) -> Volume:
    """The Volume a job measures, from its recorded inputs."""
    if "radiograph" in inputs:
        [series_uid] = inputs["radiograph"]
        wanted = set(inputs.get("instances", []))
        return load_one_radiograph(
            [p for p in files_of(series_uid) if not wanted or _sop_of(p) in wanted]
        )
    if "water" in inputs:
        return load_dixon({role: [files_of(uid) for uid in uids] for role, uids in inputs.items()})
    if "image" in inputs:
        [series_uid] = inputs["image"]
        return load_series(files_of(series_uid))
    raise VolumeError(f"job inputs with roles {sorted(inputs)} name no loader")


def _sop_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)

"""Dixon MR: which channel a series holds, stations of one acquisition, and station fusion.

*Channels* (``water``, ``fat``, ``in``, ``opp``, ``ff`` = fat fraction) are read from
ImageType first (Siemens ``DERIVED\\PRIMARY\\DIXON\\WATER``, GE ``…\\WATER``/``…\\FAT``,
Philips ``…\\W``/``…\\F``/``…\\IP``/``…\\OP``), then from SeriesDescription/ProtocolName:
GE prefixes (``WATER: Ax LAVA-Flex``, ``InPhase:``, ``FatFrac: IDEAL IQ``), Siemens/UK Biobank
suffixes (``t1_vibe_dixon_tra_W``, ``_F``, ``_in``, ``_opp``) and Philips names (``mDIXON W``,
``mDIXON-Quant_FF``). Suffixes and bare words count only in a Dixon context (``dixon``,
``ideal``, ``flex``, ``vibe``, ``quant`` or DIXON in ImageType), so ``T2 fat sat`` or
``water excitation`` are never taken for Dixon channels. If ImageType and the description
disagree, the channel is ``conflicting`` and the series is not used.

*Stations*: channel series with the same orientation and the same slice positions are one
station (the channels of one acquisition). Seed 002's fusion recipe is then followed: stations
are ordered by position, a station that repeats another's position (overlap > half the
shorter) is dropped keeping the latest SeriesTime, one global grid spans all kept stations
(in-plane spacing from PixelSpacing, z spacing the median slice distance, the finest of the
stations on each axis), every station is resampled onto it by trilinear interpolation, and
overlaps are averaged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..volume import Geometry, Volume, VolumeError

if TYPE_CHECKING:
    from .series import SeriesInfo

CHANNELS = ("water", "fat", "in", "opp", "ff")
_TYPE_TOKENS = {
    "water": {"WATER", "W", "WATER IMAGE"},
    "fat": {"FAT", "F", "FAT IMAGE"},
    "in": {"IN_PHASE", "IN PHASE", "INPHASE", "IP", "IN"},
    "opp": {"OPP_PHASE", "OUT_PHASE", "OUT PHASE", "OPPOSED_PHASE", "OPPOSED PHASE", "OP", "OPP"},
    "ff": {"FF", "FAT_FRACTION", "FATFRACTION", "FAT FRACTION", "PDFF", "FP"},
}
_GE_PREFIX = {
    "water": r"^water\s*:",
    "fat": r"^fat\s*:",
    "in": r"^in[\s_-]?phase\s*:",
    "opp": r"^out[\s_-]?phase\s*:",
    "ff": r"^(fat[\s_-]?frac\w*|fatfrac)\s*:",
}
_B, _E = r"(?<![a-z0-9])", r"(?![a-z0-9])"
_WORDS = {
    "ff": _B + r"(fat[\s_-]*frac\w*|fatfrac|pdff|ff|fat[\s_-]*percent\w*)" + _E,
    "water": _B + r"(water|wasser)" + _E + r"(?![\s_-]*exc)",
    "fat": _B + r"(fat|fett)" + _E + r"(?![\s_-]*(sat|supp|frac|percent))",
    "in": _B + r"(in[\s_-]?phase|inphase|ip)" + _E,
    "opp": _B + r"(opp(osed)?([\s_-]?phase)?|out[\s_-]?(of[\s_-]?)?phase|outphase|op)" + _E,
}
_SUFFIX = {
    "water": r"[\s_-]w$",
    "fat": r"[\s_-]f$",
    "in": r"[\s_-](in|ip)$",
    "opp": r"[\s_-](opp|out|op)$",
    "ff": r"[\s_-](ff|fp)$",
}
_CONTEXT = re.compile(r"dixon|ideal|flex|vibe|quant|2pt|3pt|two[\s_-]?point|e[\s_-]?thrive")
_NOT_DIXON = re.compile(r"fat[\s_-]*(sat|supp)|fatsat|\bfs\b|spair|stir")


def channel(
    image_type: Sequence[str], description: str, protocol: str, tags: Mapping[str, Any]
) -> tuple[str | None, list[str]]:
    """(channel or None or "conflicting", evidence) for one MR series."""
    evidence: list[str] = []
    from_type = None
    for value in image_type[2:]:
        for name, tokens in _TYPE_TOKENS.items():
            if value in tokens:
                from_type = from_type or name
                evidence.append(f"ImageType value {value!r} → {name}")
    from_text = None
    is_dixon_type = "DIXON" in image_type or from_type is not None
    for source, text in (("SeriesDescription", description), ("ProtocolName", protocol)):
        lowered = text.lower().strip()
        if not lowered:
            continue
        found = None
        for name, pattern in _GE_PREFIX.items():
            if re.search(pattern, lowered):
                found, how = name, "GE prefix"
                break
        if found is None and (is_dixon_type or _CONTEXT.search(lowered)):
            if _NOT_DIXON.search(lowered):
                evidence.append(f"{source} {text!r} names fat suppression, not a Dixon channel")
                continue
            for name, pattern in _SUFFIX.items():
                if re.search(pattern, lowered):
                    found, how = name, "suffix (Siemens/UK Biobank style)"
                    break
            if found is None:
                for name, pattern in _WORDS.items():
                    if re.search(pattern, lowered):
                        found, how = name, "keyword"
                        break
        if found:
            evidence.append(f"{source} {text!r}: {how} → {found}")
            from_text = from_text or found
    if from_type and from_text and from_type != from_text:
        evidence.append(f"ImageType says {from_type}, the description says {from_text}")
        return "conflicting", evidence
    return from_type or from_text, evidence


@dataclass
class Station:
    """One station: the channel series acquired together at one table position."""

    series: dict[str, SeriesInfo]
    z_range: tuple[float, float]

    @property
    def reference(self) -> SeriesInfo:
        return self.series.get("water") or next(iter(self.series.values()))

    @property
    def time(self) -> str:
        return self.reference.series_time

    @property
    def extent(self) -> float:
        return self.z_range[1] - self.z_range[0]


@dataclass
class DixonPlan:
    """Stations chosen for one fused volume, and what was left out and why."""

    stations: list[Station]
    channels: list[str]
    dropped: list[tuple[SeriesInfo, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def coverage_mm(self) -> float:
        if not self.stations:
            return 0.0
        return max(s.z_range[1] for s in self.stations) - min(s.z_range[0] for s in self.stations)

    def inputs(self) -> dict[str, list[str]]:
        """Job inputs: role → series UIDs, one per station, inferior to superior."""
        return {name: [s.series[name].series_uid for s in self.stations] for name in self.channels}


def _station_key(info: SeriesInfo) -> tuple:
    assert info.z_range_mm is not None and info.normal is not None
    return (
        tuple(round(v, 2) for v in info.normal),
        round(info.z_range_mm[0] * 2) / 2,
        round(info.z_range_mm[1] * 2) / 2,
        info.instance_count,
        info.tags.get("Rows"),
        info.tags.get("Columns"),
    )


def plan_stations(
    series: Sequence[SeriesInfo],
    required: Sequence[str] = ("water",),
    optional: Sequence[str] = ("fat",),
    max_gap_mm: float = 10.0,
) -> DixonPlan:
    """Group channel series into stations, drop repeats, and pick one contiguous set."""
    groups: dict[tuple, dict[str, SeriesInfo]] = {}
    dropped: list[tuple[SeriesInfo, str]] = []
    for info in series:
        station = groups.setdefault(_station_key(info), {})
        previous = station.get(info.dixon_channel or "")
        if previous is not None:
            keep, lose = sorted((previous, info), key=lambda s: s.acquired, reverse=True)
            station[info.dixon_channel or ""] = keep
            dropped.append(
                (
                    lose,
                    f"repeats {keep.label} at the same position; the later acquisition "
                    f"(SeriesTime {keep.series_time or '?'}) is kept",
                )
            )
        else:
            station[info.dixon_channel or ""] = info
    stations = []
    for members in groups.values():
        missing = [name for name in required if name not in members]
        if missing:
            for info in members.values():
                dropped.append((info, f"its station has no {' or '.join(missing)} series"))
            continue
        reference = members[required[0]]
        assert reference.z_range_mm is not None
        stations.append(Station(members, reference.z_range_mm))
    stations.sort(key=lambda s: (s.z_range[0] + s.z_range[1]) / 2)
    kept: list[Station] = []
    for station in stations:
        duplicate = next(
            (
                other
                for other in kept
                if min(other.z_range[1], station.z_range[1])
                - max(other.z_range[0], station.z_range[0])
                > 0.5 * max(min(other.extent, station.extent), 1e-3)
            ),
            None,
        )
        if duplicate is None:
            kept.append(station)
            continue
        keep, lose = sorted((duplicate, station), key=lambda s: s.reference.acquired, reverse=True)
        if keep is station:
            kept[kept.index(duplicate)] = station
        for info in lose.series.values():
            dropped.append(
                (
                    info,
                    f"repeats the station at z {keep.z_range[0]:.0f}-{keep.z_range[1]:.0f} mm, "
                    f"acquired later (SeriesTime {keep.time or '?'}); the latest is kept",
                )
            )
    kept.sort(key=lambda s: s.z_range[0])
    chains: list[list[Station]] = []
    for station in kept:
        if chains and station.z_range[0] - chains[-1][-1].z_range[1] <= max_gap_mm:
            chains[-1].append(station)
        else:
            chains.append([station])
    notes = []
    best: list[Station] = []
    if chains:
        best = max(
            chains,
            key=lambda c: (
                c[-1].z_range[1] - c[0].z_range[0],
                len(c),
                max(s.reference.acquired for s in c),
            ),
        )
        for chain in chains:
            if chain is best:
                continue
            for station in chain:
                for info in station.series.values():
                    dropped.append(
                        (
                            info,
                            f"separated by more than {max_gap_mm:g} mm from a longer set "
                            "of stations",
                        )
                    )
    channels = list(required)
    for name in optional:
        if best and all(name in s.series for s in best):
            channels.append(name)
        elif best:
            notes.append(f"no {name} channel at every station: fused without {name}")
    for station in best:
        for name, info in station.series.items():
            if name not in channels:
                dropped.append((info, f"{name} channel is not used by this profile"))
    return DixonPlan(best, channels, dropped, notes)


# -- fusion (pure: arrays and geometry in, one volume out) ---------------------------------


def _axis_weights(
    target: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For fractional indices `target` along an axis of `size` samples: the valid mask, the
    lower and upper neighbours and the upper weight of linear interpolation."""
    eps = 1e-6
    valid = (target >= -eps) & (target <= size - 1 + eps)
    clipped = np.clip(target, 0, size - 1)
    lower = np.minimum(np.floor(clipped).astype(int), max(size - 2, 0))
    weight = clipped - lower
    upper = np.minimum(lower + 1, size - 1)
    return valid, lower, upper, weight


def _interpolate_axis(array: np.ndarray, axis: int, lower, upper, weight) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    w = weight.reshape(shape)
    return np.take(array, lower, axis=axis) * (1 - w) + np.take(array, upper, axis=axis) * w


def fuse_stations(stations: Sequence[Volume], orientation_tolerance: float = 1e-3) -> Volume:
    """Fuse co-oriented station volumes onto one grid (trilinear, overlaps averaged).

    Every station's `channels` present in all stations are fused the same way. The result's
    `datasets` are the source headers of all stations in order (for references); with more
    than one station they are not one per fused slice.
    """
    if not stations:
        raise VolumeError("no stations to fuse")
    directions = stations[0].geometry.directions
    for station in stations[1:]:
        if np.max(np.abs(station.geometry.directions - directions)) > orientation_tolerance:
            raise VolumeError("stations have different orientations; they cannot share one grid")
    spacing = np.min([s.geometry.spacing for s in stations], axis=0)
    lows, highs = [], []
    for station in stations:
        start = directions.T @ station.geometry.origin  # coordinates in the grid frame
        size = np.array(station.array.shape[::-1], dtype=float)  # (i, j, k)
        lows.append(start)
        highs.append(start + (size - 1) * station.geometry.spacing)
    low, high = np.min(lows, axis=0), np.max(highs, axis=0)
    shape_ijk = (np.floor((high - low) / spacing + 1e-6).astype(int) + 1).tolist()
    geometry = Geometry(origin=directions @ low, directions=directions, spacing=spacing)
    names = [n for n in stations[0].channels if all(n in s.channels for s in stations)]
    total = {name: np.zeros(shape_ijk[::-1], dtype=np.float64) for name in ["", *names]}
    count = np.zeros(shape_ijk[::-1], dtype=np.uint8)
    for station, start in zip(stations, lows, strict=True):
        windows, weights = [], []
        for axis_ijk in range(3):
            grid = low[axis_ijk] + np.arange(shape_ijk[axis_ijk]) * spacing[axis_ijk]
            fractional = (grid - start[axis_ijk]) / station.geometry.spacing[axis_ijk]
            size = station.array.shape[2 - axis_ijk]
            valid, lower, upper, weight = _axis_weights(fractional, size)
            where = np.nonzero(valid)[0]
            window = slice(int(where[0]), int(where[-1]) + 1) if len(where) else slice(0, 0)
            windows.append(window)
            weights.append((lower[window], upper[window], weight[window]))
        if any(w.stop <= w.start for w in windows):
            continue
        target = (windows[2], windows[1], windows[0])  # array order k, j, i
        for name in total:
            image = station.array if name == "" else station.channels[name]
            resampled = np.asarray(image, dtype=np.float64)
            for axis_ijk in range(3):
                resampled = _interpolate_axis(resampled, 2 - axis_ijk, *weights[axis_ijk])
            total[name][target] += resampled
        count[target] += 1
    covered = count > 0
    fused = {}
    for name, values in total.items():
        out = np.zeros(values.shape, dtype=np.float32)
        out[covered] = values[covered] / count[covered]
        fused[name] = out
    datasets = [ds for station in stations for ds in station.datasets]
    return Volume(
        array=fused.pop(""),
        geometry=geometry,
        datasets=datasets,
        channels=fused,
    )

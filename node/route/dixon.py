"""Dixon MR: which channel series form the stations of one acquisition (fusing them onto one grid
is the infer stage's, `myonode.infer.fusion`).

Each series' channel is read by `myonode.dicom.dixon_channel`.

*Stations*: channel series with the same orientation and the same slice positions are one
station (the channels of one acquisition). Following seed 002, stations are ordered by
position and a station that repeats another's position (overlap > half the shorter) is dropped,
keeping the latest SeriesTime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from myonode.route.series import SeriesInfo


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

"""Routing profiles: `dicom_profiles/*.yaml`, one per pipeline, validated on load.

A profile names the pipeline it feeds, the kind of input it assembles (``volume``: one series;
``dixon``: water/fat stations fused into one volume; ``radiograph``: one image), the rules a
series must pass, the order of preferences that picks one best series, and output settings.
Every key is checked against a schema (pydantic, unknown keys refused); an error names the
file, the line and the key. Built-in profiles ship with the package; `routing.profiles_dir`
adds a site's own, which replace built-in ones of the same `name`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydicom.uid import UID

from myonode.dicom import sop
from myonode.pipelines import Pipeline, PipelineDefinitionError, PipelineSpec, pipelines_from

Plane = Literal["axial", "coronal", "sagittal"]
KernelClass = Literal["soft", "medium", "sharp"]
ContrastClass = Literal["unenhanced", "contrast", "unknown", "conflicting"]
Channel = Literal["water", "fat", "in", "opp", "ff"]
View = Literal["PA", "AP", "LATERAL", "frontal", "decubitus", "unknown", "conflicting"]
Preference = Literal[
    "unenhanced",
    "soft_kernel",
    "thinnest",
    "finest_in_plane",
    "coverage",
    "instances",
    "latest",
    "view_pa",
    "spacing_known",
    "largest_matrix",
    "original",
    "dixon_water",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    min: float | None = None
    max: float | None = None
    allow_missing: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class ImageTypeRule(_Strict):
    require_all: list[str] = Field(default_factory=list)
    exclude_any: list[str] = Field(default_factory=list)

    @field_validator("require_all", "exclude_any")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return [v.strip().upper() for v in values]


class OrientationRule(_Strict):
    allowed: list[Plane]
    tolerance_deg: float = Field(default=10.0, ge=0, le=45)


class KernelRule(_Strict):
    allowed: list[KernelClass]
    allow_unknown: bool = True


class BodyPartRule(_Strict):
    allowed: list[str]
    allow_missing: bool = True

    @field_validator("allowed")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return [v.strip().upper() for v in values]


class ContrastRule(_Strict):
    allowed: list[ContrastClass] = Field(
        default_factory=lambda: ["unenhanced", "contrast", "unknown", "conflicting"]
    )
    image_evidence: bool = True
    max_slices: int = Field(default=12, ge=1, le=200)


class DixonRule(_Strict):
    required: list[Channel] = Field(default_factory=lambda: ["water"])
    optional: list[Channel] = Field(default_factory=lambda: ["fat"])
    max_station_gap_mm: float = Field(default=10.0, ge=0)


class ViewRule(_Strict):
    allowed: list[View]


class Rules(_Strict):
    """Selection rules, evaluated in this order; every one present must pass."""

    modality: list[str] | None = None
    sop_classes: list[str] | None = None
    image_type: ImageTypeRule | None = None
    exclude_diffusion: bool = False
    orientation: OrientationRule | None = None
    slice_thickness_mm: Range | None = None
    slice_spacing_mm: Range | None = None
    kernel: KernelRule | None = None
    gantry_tilt_deg: Range | None = None
    body_part: BodyPartRule | None = None
    coverage_mm: Range | None = None
    fov_mm: Range | None = None
    min_instances: int | None = Field(default=None, ge=1)
    dixon_channel: list[Channel | Literal["none"]] | None = None
    view: ViewRule | None = None
    pixel_spacing_required: bool | None = None
    photometric: list[Literal["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL_422"]] | None = None
    contrast: ContrastRule | None = None

    @field_validator("modality")
    @classmethod
    def _modalities(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else [v.strip().upper() for v in values]

    @field_validator("sop_classes")
    @classmethod
    def _sop_classes(cls, values: list[str] | None) -> list[str] | None:
        """SOP classes by keyword (CTImageStorage) or UID; stored as UIDs."""
        if values is None:
            return None
        resolved = []
        by_keyword = {UID(u).keyword: str(u) for u in sop.STORAGE_CLASSES}
        for value in values:
            if value in by_keyword:
                resolved.append(by_keyword[value])
            elif UID(value).is_valid and value in sop.STORAGE_CLASSES:
                resolved.append(value)
            else:
                known = ", ".join(sorted(by_keyword))
                raise ValueError(f"{value!r} is not a storage SOP class the node accepts: {known}")
        return resolved


class Profile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    pipeline: str = Field(pattern=r"^[a-z0-9_]+$")
    description: str = ""
    kind: Literal["volume", "dixon", "radiograph"] = "volume"
    priority: int = Field(
        default=100, description="lower first; the first profile to fill a pipeline wins"
    )
    enabled: bool = True
    rules: Rules
    dixon: DixonRule | None = None
    prefer: list[Preference] = Field(default_factory=list)
    output: PipelineSpec = Field(default_factory=PipelineSpec)
    source: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _dixon_settings(self) -> Profile:
        if self.kind == "dixon" and self.dixon is None:
            raise ValueError("a dixon profile needs a `dixon:` section (required channels)")
        if self.kind != "dixon" and self.dixon is not None:
            raise ValueError("`dixon:` applies to profiles of kind dixon only")
        return self


class ProfileError(ValueError):
    """A profile file is invalid; the message names file, line and key."""


def _line_of(node: yaml.Node | None, location: Sequence[Any]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location (deepest found)."""
    line = None if node is None else node.start_mark.line + 1
    for part in location:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def parse_profile(text: str, source: str) -> Profile:
    """Validate one profile document; errors carry `source:line`."""
    try:
        tree = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProfileError(f"{source}: a profile is a mapping with name, pipeline and rules")
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            location = [p for p in error["loc"] if not str(p).startswith("function-")]
            line = _line_of(tree, location)
            where = f"{source}:{line}" if line else source
            key = ".".join(str(p) for p in location) or "(top level)"
            lines.append(f"  {where}: {key}: {error['msg']}")
        raise ProfileError("invalid routing profile:\n" + "\n".join(lines)) from exc
    return profile.model_copy(update={"source": source})


def builtin_profiles_dir() -> Path:
    """`dicom_profiles/` of the package (installed) or of the source checkout."""
    from importlib import resources

    try:
        packaged = resources.files("myonode.dicom_profiles")
        path = Path(str(packaged))
        if path.is_dir():
            return path
    except ModuleNotFoundError:
        pass
    return Path(__file__).resolve().parents[2] / "dicom_profiles"


def load_profiles(directories: Iterable[Path] | None = None) -> list[Profile]:
    """Profiles from the built-in directory, then each of `directories`; later ones replace
    earlier ones of the same name (output keys they do not set are kept from the one they
    replace). Disabled profiles are dropped. Sorted by priority."""
    by_name: dict[str, Profile] = {}
    problems = []
    for directory in [builtin_profiles_dir(), *(directories or [])]:
        directory = Path(directory)
        if not directory.is_dir():
            raise ProfileError(f"routing profile directory {directory} does not exist")
        for path in sorted(directory.glob("*.y*ml")):
            try:
                profile = parse_profile(path.read_text(), str(path))
            except ProfileError as exc:
                problems.append(str(exc))
                continue
            replaced = by_name.get(profile.name)
            if replaced is not None:  # keys the new profile leaves out keep the replaced values
                inherited = {
                    k: getattr(replaced.output, k)
                    for k in replaced.output.model_fields_set - profile.output.model_fields_set
                }
                output = profile.output.model_copy(update=inherited)
                output.model_fields_set.update(inherited)
                profile = profile.model_copy(update={"output": output})
            by_name[profile.name] = profile
    if problems:
        raise ProfileError("\n".join(problems))
    return sorted((p for p in by_name.values() if p.enabled), key=lambda p: (p.priority, p.name))


def profile_dirs(configured: Path | None) -> list[Path]:
    """Extra profile directories from `routing.profiles_dir`."""
    return [] if configured is None else [Path(configured)]


def configured_pipelines(profiles: Sequence[Profile]) -> dict[str, Pipeline]:
    """The pipelines the profiles define (`output:` sections, see `myonode.pipelines`)."""
    try:
        return pipelines_from((p.pipeline, p.output, p.source or p.name) for p in profiles)
    except PipelineDefinitionError as exc:
        raise ProfileError(str(exc)) from exc


def builtin_pipelines() -> dict[str, Pipeline]:
    """The pipelines of the built-in profiles alone."""
    return configured_pipelines(load_profiles())


def wanted_series(profiles: Iterable[Profile]) -> dict[str, list[str] | None]:
    """The modalities and SOP classes some enabled profile could select: what an archive in
    front of the node forwards (it leaves out the rest, e.g. dose reports, presentation states,
    private non-image objects, rather than have the whole study refused). Modalities are None
    when a profile takes any."""
    modalities: set[str] | None = set()
    sop_classes: set[str] = set()
    for profile in profiles:
        if profile.rules.modality is None:
            modalities = None
        elif modalities is not None:
            modalities.update(profile.rules.modality)
        classes = profile.rules.sop_classes
        sop_classes.update(sop.IMAGE_CLASSES if classes is None else classes)
    return {
        "modalities": None if modalities is None else sorted(modalities),
        "sop_classes": sorted(sop_classes),
    }

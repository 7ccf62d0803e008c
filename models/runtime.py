"""Resident inference for segmentation bundles: Volume -> label map + per-label confidence.

A `SegmentationModel` is built once per worker (weights verified, network on its device, in
eval mode) and then serves any number of volumes. Per volume: channels are stacked, the grid
is reoriented to canonical (exact) and resampled to the bundle's spacing, intensities are
normalised, and the network runs through MONAI's sliding-window inferer with overlap
blending — on batches of axial slices for 2D models (seed 000) or on the volume for 3D ones
(seeds 001, 002). On CUDA it runs under automatic mixed precision. Probabilities are
resampled back to the source grid before the argmax, so labels land on the source voxels.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import SlidingWindowInferer

from myonode.core.volume import Volume
from myonode.models.bundle import Bundle, BundleError, config_parser
from myonode.models.preprocess import (
    normalizer,
    orientation_of,
    resampled_shape,
    resize,
    sides,
    stack_channels,
)


def resolve_device(preference: str | None = None) -> torch.device:
    """``"cuda"`` when available (or asked for), else CPU."""
    if preference:
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BundleError("CUDA was requested but no CUDA device is available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Automatic mixed precision on CUDA (float16); full precision on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def build_network(bundle: Bundle) -> torch.nn.Module:
    """The bundle's `network_def` instantiated by MONAI's config parser (weights not loaded);
    the config was checked against its sha256 and the allow-list by `load_bundle`, and is
    checked against the allow-list again here."""
    parser = config_parser(bundle.inference, f"{bundle.root}/configs/inference.json")
    try:
        return parser.get_parsed_content("network_def")
    except Exception as exc:  # MONAI wraps import and argument errors differently
        raise BundleError(f"cannot build the network of {bundle.root}: {exc}") from exc


def load_state(data: bytes, device: torch.device) -> dict[str, Any]:
    """Tensors only (``weights_only``) from the bytes `Bundle.verified_weights` hashed: a
    state file cannot run code when it is read, and is not read a second time."""
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


@dataclass(frozen=True)
class InferenceSettings:
    """`configs/inference.json` beyond `network_def` (MONAI keys where MONAI has one)."""

    spatial_dims: int
    inferer: SlidingWindowInferer
    activation: str  # "softmax" (argmax over classes) or "sigmoid" (one binary channel)
    threshold: float
    fill_holes: bool
    slice_batch: int
    divisible: int  # pad inputs to a multiple of this (1: no padding)
    mirror_lr: dict[str, int] | None  # {"right": label, "left": label}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> InferenceSettings:
        parser = config_parser(config, "configs/inference.json")
        inferer = parser.get_parsed_content("inferer")
        if not isinstance(inferer, SlidingWindowInferer):
            raise BundleError("inference.json 'inferer' must be a SlidingWindowInferer")
        activation = config.get("activation", "softmax")
        if activation not in ("softmax", "sigmoid"):
            raise BundleError(f"unknown activation {activation!r}")
        return cls(
            spatial_dims=int(config.get("spatial_dims", 3)),
            inferer=inferer,
            activation=activation,
            threshold=float(config.get("threshold", 0.5)),
            fill_holes=bool(config.get("fill_holes", False)),
            slice_batch=int(config.get("slice_batch", 16)),
            divisible=int(config.get("divisible", 1)),
            mirror_lr=config.get("mirror_lr"),
        )


@dataclass
class Prediction:
    labels: np.ndarray  # [k, j, i] on the source grid, bundle label values
    confidence: dict[int, float]


class SegmentationModel:
    """A segmentation bundle loaded once and kept resident."""

    def __init__(self, bundle: Bundle, device: str | None = None) -> None:
        if bundle.manifest.task != "segmentation":
            raise BundleError(f"{bundle.root} is a {bundle.manifest.task} bundle")
        self.bundle = bundle
        self.spec = bundle.manifest.input
        weights = bundle.verified_weights()  # before any config is instantiated
        self.settings = InferenceSettings.from_config(bundle.inference)
        self.device = resolve_device(device)
        network = build_network(bundle)
        network.load_state_dict(load_state(next(iter(weights.values())), self.device))
        self.network = network.to(self.device).eval()
        self._check_outputs()

    def _check_outputs(self) -> None:
        labels = sorted(self.bundle.manifest.labels)
        if self.settings.mirror_lr:
            if set(self.settings.mirror_lr.values()) != set(labels):
                raise BundleError("mirror_lr must name exactly the bundle's labels")
        elif self.settings.activation == "softmax" and labels != list(range(1, len(labels) + 1)):
            raise BundleError("softmax bundles need labels 1..N (channel n is label n)")

    def predict(self, volume: Volume) -> Prediction:
        orientation = orientation_of(volume.geometry)
        image = orientation.to_canonical(stack_channels(volume, self.spec.channels))
        spacing = orientation.spacing(volume.geometry)
        labels = np.zeros(image.shape[1:], dtype=np.uint16)
        sums: dict[int, float] = {}
        counts: dict[int, int] = {}
        for side in sides(image[0], bool(self.settings.mirror_lr)):
            for ks, probabilities in self._probabilities(side.cut(image), spacing):
                side_labels, chosen = self._decide(probabilities, side.name)
                side_labels, chosen = side.uncut(side_labels), side.uncut(chosen)
                labels[ks, :, side.columns] = side_labels
                for label in np.unique(side_labels):
                    if label == 0:
                        continue
                    mask = side_labels == label
                    sums[int(label)] = sums.get(int(label), 0.0) + float(chosen[mask].sum())
                    counts[int(label)] = counts.get(int(label), 0) + int(mask.sum())
        if self.settings.fill_holes:
            labels = fill_holes_per_slice(labels)
        confidence = {label: sums[label] / counts[label] for label in counts}
        return Prediction(labels=orientation.from_canonical(labels).copy(), confidence=confidence)

    def _probabilities(
        self, image: np.ndarray, spacing: tuple[float, float, float]
    ) -> Iterator[tuple[slice, torch.Tensor]]:
        """(slice range k, class probabilities [O, k, j, i] on the side's own grid).

        The side is resampled to the bundle's spacing and normalised (after the crop, as
        seed 001 normalises), and the network's logits are resampled back.
        """
        source_shape = image.shape[1:]
        net_shape = resampled_shape(
            source_shape, spacing, self.spec.spacing_mm, self.settings.spatial_dims == 2
        )
        image = resize(torch.from_numpy(np.ascontiguousarray(image))[None], net_shape, "trilinear")[
            0
        ].numpy()
        scale = normalizer(image, self.spec)
        if self.settings.spatial_dims == 3:
            logits = self._infer(torch.from_numpy(scale(image))[None])
            yield slice(None), self._activate(resize(logits, source_shape, "trilinear"))[0]
            return
        batch = self.settings.slice_batch
        for start in range(0, image.shape[1], batch):
            stop = min(start + batch, image.shape[1])
            slices = torch.from_numpy(scale(image[:, start:stop]).swapaxes(0, 1).copy())
            logits = resize(self._infer(slices), source_shape[1:], "bilinear")
            yield slice(start, stop), self._activate(logits).transpose(0, 1)

    def _infer(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits; with `divisible`, the input is first zero-padded to a
        multiple of it (a whole-slice window must suit the network's strides) and the
        logits cropped back."""
        shape = tensor.shape[2:]
        step = self.settings.divisible
        pads = [(-n) % step for n in shape]
        if any(pads):
            tensor = torch.nn.functional.pad(
                tensor, [p for pad in reversed(pads) for p in (0, pad)]
            )
        with torch.inference_mode(), autocast(self.device):
            logits = self.settings.inferer(tensor.to(self.device), self.network)
        crop = (slice(None), slice(None), *(slice(0, n) for n in shape))
        return logits[crop].float().cpu()

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        if self.settings.activation == "sigmoid":
            return torch.sigmoid(logits)
        return torch.softmax(logits, dim=1)

    def _decide(
        self, probabilities: torch.Tensor, side: str | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(labels, probability of each voxel's decision) from [O, k, j, i] probabilities."""
        if self.settings.activation == "sigmoid":
            p = probabilities[0].numpy()
            label = self.settings.mirror_lr[side] if self.settings.mirror_lr else 1
            return np.where(p >= self.settings.threshold, label, 0).astype(np.uint16), p
        chosen, index = probabilities.max(dim=0)
        return index.numpy().astype(np.uint16), chosen.numpy()


def fill_holes_per_slice(labels: np.ndarray) -> np.ndarray:
    """Seed 000's post-processing: SimpleITK binary hole filling per label on each axial slice.

    Only background pixels are filled, so one label never overwrites another. Each label is
    filled inside its bounding box plus a one-pixel margin, which encloses every hole it has.
    """
    from scipy import ndimage

    filled = labels.copy()
    for k in range(labels.shape[0]):
        plane = labels[k]
        for index, box in enumerate(ndimage.find_objects(plane), start=1):
            if box is None:
                continue
            rows, cols = (
                slice(max(b.start - 1, 0), min(b.stop + 1, n))
                for b, n in zip(box, plane.shape, strict=True)
            )
            crop = plane[rows, cols] == index
            image = sitk.GetImageFromArray(crop.astype(np.uint8))
            holes = sitk.GetArrayFromImage(sitk.BinaryFillhole(image)).astype(bool) & ~crop
            target = filled[k, rows, cols]
            target[holes & (target == 0)] = index
    return filled

"""One chest radiograph as a single-slice `Volume`, the way every model and check reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from myonode.core.volume import Geometry, Volume, VolumeError
from myonode.dicom.headers import header_values
from myonode.dicom.radiograph import SPACING_TAGS, pixel_spacing


def load_radiograph(path: Path) -> Volume:
    """One radiograph as a single-slice Volume in which brighter means more attenuation.

    MONOCHROME1 images, and MONOCHROME2 ones whose Presentation LUT Shape is INVERSE (PS3.3
    C.11.6), are inverted over their stored range; colour images are averaged to grey. Without
    a usable spacing the geometry's spacing is NaN, so any physical size computed from it is
    NaN rather than wrong.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise VolumeError(f"{path}: a radiograph must be one frame, it has {ds.NumberOfFrames}")
    pixels = ds.pixel_array
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        pixels = pixels.mean(axis=-1)
    values = apply_modality_lut(pixels, ds).astype(np.float32)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    inverse = str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
    # DX images pair MONOCHROME1 with INVERSE: that is one inversion, not two
    if photometric == "MONOCHROME1" or (photometric == "MONOCHROME2" and inverse):
        bits = int(ds.get("BitsStored", 8) or 8)
        signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        ends = sorted((slope * low + intercept, slope * high + intercept))
        values = (ends[0] + ends[1]) - values
    spacing, _ = pixel_spacing(header_values(ds, SPACING_TAGS))
    row, column = spacing if spacing else (np.nan, np.nan)
    del ds.PixelData
    return Volume(
        array=values.reshape(1, *values.shape[-2:]),
        geometry=Geometry(
            origin=np.zeros(3), directions=np.eye(3), spacing=np.array([column, row, 1.0])
        ),
        datasets=[ds],
    )

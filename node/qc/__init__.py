"""The QC stage, between infer and measure: is each segmented structure plausible?

Pure functions of a `Volume` and a `LabelMap` (no I/O): landmarks found in the image itself
(`landmarks`), plausible ranges with their sources (`ranges`) and the checks (`checks`),
giving a `core.quality.QualityReport` with pass / review / fail and reasons per structure.
May import `core`, `dicom` and `measure`.
"""

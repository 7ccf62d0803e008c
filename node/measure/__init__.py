"""The measure stage: volumes, cross-sections, attenuation and fat fraction per structure,
indices, reference tables (z-scores), sarcopenia criteria, predictions, and result rows. Pure
functions of a `Volume` and a `LabelMap`; may import `store.records`, `core` and `dicom`.
"""

"""The dispatch stage: the persisted outbox with retries (`outbox`), C-STORE as an SCU (`scu`)
and the archive's DICOMweb (`archive`, also used for priors). May import `measure`, `encode`,
`store`, `core` and `dicom`.
"""

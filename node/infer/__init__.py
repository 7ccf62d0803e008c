"""The infer stage: a job's inputs (a series, fused Dixon stations, a radiograph) as a `Volume`,
and the engines that segment or regress it (`infer.engines`). May import `myonode.models`,
`pipelines`, `core` and `dicom`.
"""

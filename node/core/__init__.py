"""The node's shared ground: the `Volume` and its geometry, patient facts from the header, the
configuration, the value objects stages hand each other (`core.types`), mask agreement and
process handling. May import `myonode.dicom` only.
"""

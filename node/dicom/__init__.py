"""DICOM vocabulary: SOP classes, UIDs, coded concepts, anatomy (structures and SNOMED codes)
and the header readers every stage shares (plain header values, Dixon channel, radiograph view
and spacing). Imports no other part of the node.
"""

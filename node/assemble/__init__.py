"""The assemble stage: decides when a study is stable (quiet for long enough) and hands it on.
May import `store`, `core` and `dicom`.
"""

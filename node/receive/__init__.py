"""The receive stage: the C-STORE/C-ECHO event handlers (`scp`) and the one ingest path
(`ingest`) that checks, stores and indexes every instance, from the network or a folder.
May import `store`, `core` and `dicom`.
"""

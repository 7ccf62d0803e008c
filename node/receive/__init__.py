"""The receive stage: the C-STORE/C-ECHO event handlers (`scp`) and the one ingest path
(`ingest`) that checks, stores and indexes every instance, from the network or a folder;
with the bounds that make hostile input cheap (`limits`: structure walk before pydicom;
`transport`: PDU limits, data sets streamed to disk), who may associate (`policy`) and the
group commit shared by concurrent associations (`commit`).
May import `store`, `core` and `dicom`.
"""

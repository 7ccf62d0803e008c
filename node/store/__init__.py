"""Where the node keeps what it received and decided: the index (all SQL lives here), the typed
records it hands out, and durable files on disk. May import `core` and `dicom`.
"""

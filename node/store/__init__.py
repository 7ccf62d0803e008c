"""Where the node keeps what it received and decided. `repository` is the interface every stage
uses (the `Store` protocol and its typed records); `index` is its implementation, one set of
queries on SQLite (the default) or PostgreSQL, with `dialect` holding their differences and
`migrations` the versioned schema (all SQL lives in this package); `records` holds result rows
and their filter; `files` writes durable files on disk. May import `core` and `dicom`.
"""

"""myonode: an open DICOM node for muscle imaging biomarkers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("myonode")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

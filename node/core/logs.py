"""What may reach a log line: no credentials, no patient identity, no forged lines, no floods.

Logs go to the journal, to support tickets and to whoever reads them; DICOM headers and URLs
come from senders and configuration. Every record passes `redact` on the handler (so records
of every library, and Python warnings such as pydicom's "Invalid value for VR PN: ...", are
covered):

- ``scheme://user:password@host`` loses its user info;
- values of PHI-bearing attributes (names, IDs, birth dates, accession numbers, addresses)
  written as ``Keyword=value`` (URL queries), ``Keyword: value``, ``'Keyword': 'value'``,
  ``Keyword 'value'``, by
  tag ``(0010,0010)`` / ``00100010``, and the value pydicom quotes in its VR warnings;
- control characters (newline, escape...) are written as ``\\xNN``, so a UID with a newline
  cannot start a forged line;
- a line longer than `logging.max_line_chars` is cut, saying how long it was.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

REDACTED = "<redacted>"

# Attributes whose values identify a patient (PS3.15 Annex E's basic profile, the ones a
# node's own code or a library could print).
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientMotherBirthName",
    "IssuerOfPatientID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionName",
    "patient_id",
    "patient_name",
    "birth_date",
    "accession_number",
)
PHI_TAGS = (
    "00100010",
    "00100020",
    "00100030",
    "00100032",
    "00101000",
    "00101001",
    "00101040",
    "00102154",
    "00080050",
    "00080090",
    "00081050",
    "00081070",
    "00080080",
)

# Bounded repetitions only: every pattern must stay linear on a 1.6 MB line.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]{0,15}://)[^/\s@]{0,512}@")
_KEYS = "|".join([*PHI_KEYWORDS, *PHI_TAGS])
# Keyword=value up to a separator (URL query or key=value prose).
_ASSIGNED = re.compile(rf"(?P<key>\b(?:{_KEYS})\b)(?P<sep>=)(?P<value>[^&\s,;)\]}}]*)", re.I)
# Keyword: 'value' / "Keyword": "value" / Keyword: value (up to the end of the clause).
_QUOTED = re.compile(
    rf"(?P<key>[\"']?\b(?:{_KEYS})\b[\"']?\s*:\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^,;\n)\]}}]*)",
    re.I,
)
# Keyword 'value' (the quoted value right after the keyword, as in "PatientName 'X' is not...").
_SPACED = re.compile(rf"(?P<key>\b(?:{_KEYS})\b\s+)(?P<value>'[^']*'|\"[^\"]*\")", re.I)
_TAG = re.compile(
    r"(?P<key>\((?:0010|0008),\s*(?:0010|0020|0030|0032|1000|1001|1040|2154|0050|0090|1050|"
    r"1070|0080)\)[^:=\n]{0,40}[:=]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^,;\n)\]}]*)",
    re.I,
)
# pydicom: "Invalid value for VR PN: 'X'", "The value length (70) exceeds ... for VR LO."
_VR_VALUE = re.compile(r"(?P<key>[Ii]nvalid value for VR \w\w\s*:\s*)(?P<value>.*?)(?=\.?$)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _keep_key(match: re.Match) -> str:
    return match.group("key") + match.groupdict().get("sep", "") + REDACTED


def _escape_control(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def redact(text: str, max_chars: int = 2000) -> str:
    """`text` without credentials in URLs, PHI values, control characters, cut to `max_chars`."""
    total = len(text)
    text = text[: 4 * max_chars]  # bounds the work; redaction can only shorten what is kept
    text = _USERINFO.sub(r"\g<scheme>" + REDACTED + "@", text)
    text = _ASSIGNED.sub(_keep_key, text)
    text = _QUOTED.sub(_keep_key, text)
    text = _SPACED.sub(_keep_key, text)
    text = _TAG.sub(_keep_key, text)
    text = "\n".join(_VR_VALUE.sub(_keep_key, line) for line in text.split("\n"))
    text = _CONTROL.sub(_escape_control, text)
    if len(text) > max_chars or total > 4 * max_chars:
        text = f"{text[:max_chars]}... [cut: {total} characters in all]"
    return text


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line (message, arguments, traceback) has passed `redact`."""

    def __init__(self, fmt: str, max_chars: int) -> None:
        super().__init__(fmt)
        self.max_chars = max_chars

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.max_chars)


FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("pynetdicom", "highdicom", "dicomweb_client", "httpx", "httpcore")


def configure_logging(
    verbose: bool = False, max_line_chars: int = 2000, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record and Python warning through one redacting handler on the root.

    Replaces the root's handlers, so nothing reaches the output unredacted; returns the
    handler (tests remove it again).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(FORMAT, max_line_chars))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for library in QUIET_LIBRARIES:
        logging.getLogger(library).setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)
    return handler

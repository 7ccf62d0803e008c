"""Malformed DICOM for the receiver's fuzz and load checks: a fixed-seed corpus of crafted
Part 10 streams (nesting, lengths, VRs, UIDs, pixel data sizes, transfer-syntax lies, deflate
bombs, huge instances, character sets), a raw sender that puts those exact bytes on the wire,
and the oracle that decides whether an acknowledged instance is really decodable.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, evt

CT = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT = "1.2.840.10008.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
_LONG = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT"}


def element(group: int, elem: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if vr in _LONG:
        return struct.pack("<HH2sHL", group, elem, vr.encode(), 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr.encode(), len(value)) + value


def part10(dataset: bytes, sop_instance: str, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """Preamble and a valid file meta around arbitrary data set bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    pydicom.filewriter.write_file_meta_info(buffer, meta)
    return b"\0" * 128 + b"DICM" + buffer.getvalue() + dataset


def base_dataset(rng: random.Random, size: int = 16) -> Dataset:
    """A small, valid CT image whose UIDs come from `rng` (so the corpus is reproducible)."""
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = f"2.25.{rng.getrandbits(100)}"
    ds.StudyInstanceUID = "2.25.1606202601"
    ds.SeriesInstanceUID = "2.25.1606202602"
    ds.Modality = "CT"
    ds.PatientID = "FUZZ"
    ds.PatientName = "Fuzz^Corpus"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = bytes(rng.getrandbits(8) for _ in range(size * size * 2))
    return ds


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    """The data set bytes (no meta) in `syntax`."""
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=syntax == IMPLICIT, little_endian=True)
    return buffer.getvalue()


def nested(depth: int, defined: bool) -> bytes:
    """A Digital Signatures Sequence (FFFA,FFFA: sorts last) nested `depth` deep."""
    inner = b""
    for _ in range(depth):
        if defined:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            inner = element(0xFFFA, 0xFFFA, "SQ", item)
        else:
            item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
            item += struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
            seq = item + struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
            inner = struct.pack("<HH2sHL", 0xFFFA, 0xFFFA, b"SQ", 0, 0xFFFFFFFF) + seq
    return inner


def deflate_bomb(rng: random.Random, inflated_mb: int) -> tuple[bytes, str]:
    """A deflated data set that inflates to about `inflated_mb` MiB of padding."""
    ds = base_dataset(rng)
    body = encode(ds)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out = [compressor.compress(body)]
    header = struct.pack("<HH2sHL", 0xFFFC, 0xFFFC, b"OB", 0, inflated_mb * 2**20)
    out.append(compressor.compress(header))
    zeros = b"\0" * 2**20
    for _ in range(inflated_mb):
        out.append(compressor.compress(zeros))
    out.append(compressor.flush())
    return b"".join(out), ds.SOPInstanceUID


@dataclass(frozen=True)
class Case:
    category: str
    data: bytes  # the whole Part 10 stream to send
    sop_instance: str  # the command's Affected SOP Instance UID (from the meta)


def corpus(seed: int, count: int, huge_mb: int, bomb_mb: int) -> list[Case]:
    """`count` malformed (and a few valid) instances, the same for the same seed."""
    rng = random.Random(seed)
    makers = [
        _nesting,
        _length,
        _vr,
        _uid,
        _pixel,
        _syntax_lie,
        _flipped_bytes,
        _charset,
        _truncated,
    ]
    cases: list[Case] = []
    for index in range(count):
        if index % 400 == 17:
            data, uid = deflate_bomb(rng, bomb_mb)
            cases.append(Case("deflate bomb", part10(data, uid, DEFLATED), uid))
        elif index % 400 == 91:
            ds = base_dataset(rng)
            ds.Rows = ds.Columns = 1024
            ds.PixelData = b"\0" * (huge_mb * 2**20 + 2**20 - (huge_mb * 2**20 + 2**20) % 2)
            ds.Rows, ds.Columns = 1024, len(ds.PixelData) // 2048
            cases.append(Case("huge", part10(encode(ds), ds.SOPInstanceUID), ds.SOPInstanceUID))
        else:
            cases.append(makers[index % len(makers)](rng))
    return cases


def _nesting(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    depth = rng.choice([40, 200, 1000])
    data = encode(ds) + nested(depth, defined=rng.random() < 0.5)
    return Case("nesting", part10(data, ds.SOPInstanceUID), ds.SOPInstanceUID)


def _element_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    while pos + 8 <= len(data):
        offsets.append(pos)
        vr = data[pos + 4 : pos + 6].decode("latin-1")
        if vr in _LONG:
            pos += 12 + struct.unpack_from("<L", data, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return offsets


def _length(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    data = bytearray(encode(ds))
    pos = rng.choice(_element_offsets(bytes(data)))
    vr = data[pos + 4 : pos + 6].decode("latin-1")
    if vr in _LONG:
        struct.pack_into("<L", data, pos + 8, rng.choice([0xFFFFFFF0, len(data) * 3, 2**31]))
    else:
        struct.pack_into("<H", data, pos + 6, rng.choice([0xFFFF, 0xFFF0, len(data) + 1]))
    return Case("length", part10(bytes(data), ds.SOPInstanceUID), ds.SOPInstanceUID)


def _vr(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    data = bytearray(encode(ds))
    pos = rng.choice(_element_offsets(bytes(data)))
    data[pos + 4 : pos + 6] = rng.choice([b"ZZ", b"\0\0", b"sq", b"US", b"OB", b"SQ"])
    return Case("VR", part10(bytes(data), ds.SOPInstanceUID), ds.SOPInstanceUID)


def _uid(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    meta_uid = ds.SOPInstanceUID
    keyword = rng.choice(["SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"])
    bad = rng.choice(["", "\0", "1.2\x003", "1.2.abc", "9" * 80, "1.2.3\nforged log line"])
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        setattr(ds, keyword, bad)
        data = encode(ds)
    finally:
        pydicom.config.settings.writing_validation_mode = pydicom.config.RAISE
    return Case("UID", part10(data, meta_uid), meta_uid)


def _pixel(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    change = rng.choice(["short", "rows", "frames", "bits", "empty"])
    if change == "short":
        ds.PixelData = ds.PixelData[: rng.randrange(2, len(ds.PixelData) - 2, 2)]
    elif change == "rows":
        ds.Rows = rng.choice([4096, 65535])
    elif change == "frames":
        ds.NumberOfFrames = rng.choice([2, 1000, 2**31 - 1])
    elif change == "bits":
        ds.BitsAllocated = rng.choice([0, 12, 24])
    else:
        ds.PixelData = b""
    return Case(f"pixel {change}", part10(encode(ds), ds.SOPInstanceUID), ds.SOPInstanceUID)


def _syntax_lie(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    claimed, actual = rng.choice(
        [
            (IMPLICIT, ExplicitVRLittleEndian),
            (ExplicitVRLittleEndian, IMPLICIT),
            (JPEG_BASELINE, ExplicitVRLittleEndian),
            (DEFLATED, ExplicitVRLittleEndian),
        ]
    )
    data = encode(ds, actual)
    return Case("syntax lie", part10(data, ds.SOPInstanceUID, claimed), ds.SOPInstanceUID)


def _flipped_bytes(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    data = bytearray(encode(ds))
    header_end = len(data) - len(ds.PixelData)
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(header_end)] = rng.getrandbits(8)
    return Case("flipped bytes", part10(bytes(data), ds.SOPInstanceUID), ds.SOPInstanceUID)


def _charset(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    data = encode(ds)
    charset = rng.choice([b"ISO_IR 999", b"ISO 2022 IR 87", b"\\\\\\", b"ISO_IR 192"])
    name = bytes(rng.getrandbits(8) for _ in range(rng.choice([3, 9, 31]))) + b" "
    extra = element(0x0008, 0x0005, "CS", charset + b" " * (len(charset) % 2))
    extra += element(0x0010, 0x0010, "PN", name[: len(name) - len(name) % 2])
    return Case("character set", part10(extra + data, ds.SOPInstanceUID), ds.SOPInstanceUID)


def _truncated(rng: random.Random) -> Case:
    ds = base_dataset(rng)
    data = encode(ds)
    cut = rng.randrange(1, len(data) - 1)
    return Case("truncated", part10(data[:cut], ds.SOPInstanceUID), ds.SOPInstanceUID)


def decodable(path: Path) -> str | None:
    """Why a stored instance cannot be fully decoded by pydicom, or None if it can."""
    try:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
        if "PixelData" in ds:
            _ = ds.pixel_array
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@contextmanager
def raw_sending() -> Iterator[None]:
    """pynetdicom sends a file's data set bytes as they are (no decode, no re-encode)."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


class RawSender:
    """One association that C-STOREs crafted files and records each answer's status
    (None: no answer, the association ended)."""

    SYNTAXES = (ExplicitVRLittleEndian, IMPLICIT, DEFLATED, JPEG_BASELINE)

    def __init__(self, port: int, workdir: Path, calling: str = "FUZZ") -> None:
        self.port, self.workdir, self.calling = port, workdir, calling
        self.ae = AE(ae_title=calling)
        for syntax in self.SYNTAXES:
            self.ae.add_requested_context(CT, syntax)
        self.ae.dimse_timeout = self.ae.acse_timeout = self.ae.network_timeout = 30
        self.assoc = None
        self.last_status: int | None = None

    def _on_response(self, event) -> None:  # the raw response, even one pynetdicom rejects
        status = getattr(event.message.command_set, "Status", None)
        if status is not None:
            self.last_status = int(status)

    def send(self, case: Case) -> int | None:
        if self.assoc is None or not self.assoc.is_established:
            self.assoc = self.ae.associate(
                "127.0.0.1",
                self.port,
                ae_title="MYONODE",
                evt_handlers=[(evt.EVT_DIMSE_RECV, self._on_response)],
            )
            if not self.assoc.is_established:
                return None
        path = self.workdir / f"case-{generate_uid()[-12:]}.dcm"
        path.write_bytes(case.data)
        self.last_status = None
        try:
            with raw_sending():
                self.assoc.send_c_store(path)
        except Exception:
            self.assoc.abort()
            self.assoc = None
        finally:
            path.unlink(missing_ok=True)
        if self.assoc is not None and not self.assoc.is_established:
            self.assoc = None
        return self.last_status

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

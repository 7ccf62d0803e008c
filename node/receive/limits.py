"""Bounded reading of received instances: a hostile byte stream costs a bounded amount of
memory and time before pydicom ever sees it.

pydicom parses nested sequences recursively and trusts declared lengths, so a 58 KB C-STORE
nesting sequences 1,000 deep grows the process without bound, and a deflated data set is
inflated whole before anything is checked. `check_structure` walks the encoded data set once,
iteratively, before pydicom reads it: nesting deeper than the limit, a length that runs past
its enclosing sequence, item or file, an impossible VR, or a deflated stream that inflates
past the size limit (checked while inflating) is refused with a reason. The walk is linear in
the size of the data and keeps only a stack as deep as the nesting limit.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

IMPLICIT_LITTLE = "1.2.840.10008.1.2"
EXPLICIT_BIG = "1.2.840.10008.1.2.2"
DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")  # Deflated Explicit/Image Frame

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
_VRS = _LONG_VRS | frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip


class Malformed(ValueError):
    """The encoded data cannot be understood: not retryable (0xC000)."""


class TooLarge(ValueError):
    """The instance (or its inflated data set) exceeds the configured size limit (0xA700)."""


@dataclass(frozen=True)
class Limits:
    """What one received instance may cost."""

    max_bytes: int  # the encoded instance as received
    max_inflated_bytes: int  # a deflated data set once inflated (held in memory to parse)
    max_depth: int  # sequences nested inside each other


def _sequence_vr(tag: int) -> bool:
    try:
        return dictionary_VR(tag) == "SQ"
    except KeyError:
        return False


@dataclass
class _Frame:
    end: int | None  # None: undefined length, ends at a delimiter
    kind: str  # "sequence", "item", "fragments"
    implicit: bool


def _walk(data: bytes | memoryview, pos: int, implicit: bool, little: bool, limits: Limits) -> None:
    """Check every element header from `pos` to the end of `data` (see the module doc)."""
    end_of_data = len(data)
    order = "<" if little else ">"
    tag_format, u16, u32 = (
        struct.Struct(order + "HH"),
        struct.Struct(order + "H"),
        struct.Struct(order + "L"),
    )
    stack: list[_Frame] = []

    def limit_of() -> int:
        for frame in reversed(stack):
            if frame.end is not None:
                return frame.end
        return end_of_data

    while True:
        while stack and stack[-1].end is not None and pos == stack[-1].end:
            stack.pop()
        if pos == end_of_data:
            break
        if pos + 8 > limit_of():
            raise Malformed(f"element header at byte {pos} runs past its container")
        group, element = tag_format.unpack_from(data, pos)
        tag = group << 16 | element
        frame = stack[-1] if stack else None
        in_implicit = frame.implicit if frame else implicit
        if tag in (ITEM, ITEM_END, SEQUENCE_END):
            length = u32.unpack_from(data, pos + 4)[0]
            pos += 8
            if frame is None or frame.kind == "item":
                if tag == ITEM_END and frame is not None and frame.end is None:
                    stack.pop()
                    continue
                raise Malformed(f"item tag {tag:08X} outside a sequence at byte {pos - 8}")
            if tag == SEQUENCE_END:
                if frame.end is not None:
                    raise Malformed(f"sequence delimiter in a defined-length sequence at {pos}")
                stack.pop()
                continue
            if tag != ITEM:
                raise Malformed(f"item delimiter directly in a sequence at byte {pos - 8}")
            if frame.kind == "fragments":
                if length == UNDEFINED or pos + length > limit_of():
                    raise Malformed(f"pixel data fragment of {length} bytes at byte {pos}")
                pos += length
                continue
            if length != UNDEFINED and pos + length > limit_of():
                raise Malformed(f"item of {length} bytes at byte {pos} runs past its sequence")
            stack.append(
                _Frame(None if length == UNDEFINED else pos + length, "item", frame.implicit)
            )
            continue
        if frame is not None and frame.kind != "item":
            raise Malformed(f"element {tag:08X} directly inside a sequence at byte {pos}")
        if in_implicit:
            vr = None
            length = u32.unpack_from(data, pos + 4)[0] if little else 0
            if not little:
                raise Malformed("implicit VR big endian does not exist")
            pos += 8
        else:
            vr = bytes(data[pos + 4 : pos + 6])
            if vr not in _VRS:
                raise Malformed(f"invalid VR {vr!r} for element {tag:08X} at byte {pos}")
            if vr in _LONG_VRS:
                if pos + 12 > limit_of():
                    raise Malformed(f"element header at byte {pos} runs past its container")
                length = u32.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                length = u16.unpack_from(data, pos + 6)[0]
                pos += 8
        is_sequence = vr == b"SQ" or (vr is None and (length == UNDEFINED or _sequence_vr(tag)))
        if length == UNDEFINED:
            if vr in (b"OB", b"OW") or (vr is None and tag == 0x7FE00010):
                stack.append(_Frame(None, "fragments", in_implicit))
                continue
            if not is_sequence and vr != b"UN":
                raise Malformed(f"undefined length on non-sequence {tag:08X} at byte {pos}")
            stack.append(_Frame(None, "sequence", in_implicit or vr == b"UN"))
        elif pos + length > limit_of():
            raise Malformed(
                f"element {tag:08X} claims {length} bytes at byte {pos}, more than its "
                "container or the file holds"
            )
        elif is_sequence:
            stack.append(_Frame(pos + length, "sequence", in_implicit))
        else:
            pos += length
            continue
        depth = sum(1 for f in stack if f.kind == "sequence")
        if depth > limits.max_depth:
            raise Malformed(f"sequences nested deeper than {limits.max_depth}")
    if stack and any(f.end is None for f in stack):
        raise Malformed("data set ends inside an undefined-length sequence or item")


def inflate(data: bytes | memoryview, max_bytes: int) -> bytes:
    """Inflate a deflated data set, refusing as soon as it would exceed `max_bytes`."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    view = memoryview(data)
    chunk = 1 << 16
    try:
        for start in range(0, len(view), chunk):
            piece = view[start : start + chunk]
            while piece:
                out += inflater.decompress(piece, max_bytes + 1 - len(out))
                if len(out) > max_bytes:
                    raise TooLarge(f"deflated data set inflates past {max_bytes // 2**20} MiB")
                piece = inflater.unconsumed_tail
        out += inflater.flush()
    except zlib.error as exc:
        raise Malformed(f"deflated data set is corrupt: {exc}") from exc
    if len(out) > max_bytes:
        raise TooLarge(f"deflated data set inflates past {max_bytes // 2**20} MiB")
    return bytes(out)


def meta_end_and_syntax(data: bytes | memoryview) -> tuple[int, str]:
    """Where the Part 10 file meta ends, and the transfer syntax it names."""
    if len(data) < 132 or bytes(data[128:132]) != b"DICM":
        raise Malformed("no DICM prefix: not a DICOM Part 10 stream")
    pos, syntax = 132, None
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = bytes(data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                raise Malformed("file meta ends inside an element header")
            length = struct.unpack_from("<L", data, pos + 8)[0]
            pos += 12
        elif vr in _VRS:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8
        else:
            raise Malformed(f"file meta element (0002,{element:04X}) has invalid VR {vr!r}")
        if length == UNDEFINED or pos + length > len(data):
            raise Malformed(f"file meta element (0002,{element:04X}) runs past the file")
        if element == 0x0010:
            syntax = bytes(data[pos : pos + length]).rstrip(b"\0 ").decode("ascii", "replace")
        pos += length
    if not syntax:
        raise Malformed("file meta has no Transfer Syntax UID")
    return pos, syntax


def check_structure(data: bytes | memoryview, limits: Limits) -> None:
    """Refuse (`Malformed`, `TooLarge`) a Part 10 stream pydicom could not read within limits."""
    if len(data) > limits.max_bytes:
        raise TooLarge(f"instance of {len(data) / 2**20:.0f} MiB exceeds the size limit")
    start, syntax = meta_end_and_syntax(data)
    if syntax in DEFLATED:
        _walk(inflate(memoryview(data)[start:], limits.max_inflated_bytes), 0, False, True, limits)
        return
    _walk(data, start, syntax == IMPLICIT_LITTLE, syntax != EXPLICIT_BIG, limits)

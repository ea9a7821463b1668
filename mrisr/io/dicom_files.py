"""Single DICOM files on their own: is a file DICOM, and why could GDCM not read it.

GDCM's series listing (``GetGDCMSeriesIDs``, ``GetGDCMSeriesFileNames``)
skips every file it cannot parse without a word, so a truncated slice
vanishes from the series: at either end the volume is one slice short, in
the middle it looks like uneven spacing. :func:`left_out_files` finds the
files of a folder that present themselves as DICOM but are in no series,
and tells a damaged slice from a DICOM object that holds no image (a
DICOMDIR, a report), which stays out of the volume as before.

Only the bytes of the files GDCM left out are read, so a complete series
costs one folder listing more.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

#: Names that mark a file as DICOM even without the "DICM" marker (an empty file,
#: or an old file without the 128-byte preamble).
DICOM_ENDINGS = (".dcm", ".dicom", ".ima")
#: MediaStorageSOPClassUID of a DICOMDIR (Media Storage Directory): an index, never a slice.
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"
#: Implicit VR Little Endian: elements carry no VR, lengths are 4 bytes.
IMPLICIT_VR = "1.2.840.10008.1.2"
#: The Pixel Data element (7FE0,0010) as it is written in little endian.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
#: Explicit VRs whose length takes 4 bytes after 2 reserved ones (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"})
_LONG_VRS |= frozenset({b"UR", b"UT", b"UV"})


def looks_like_dicom(path: Path) -> bool:
    """Whether a file presents itself as DICOM.

    It does when it has the "DICM" marker at byte 128 (a DICOM Part 10 file)
    or is named ``.dcm``, ``.dicom`` or ``.ima`` (any case). Hidden files never
    do. Reads at most 132 bytes.

    Args:
        path: a file.
    """
    if path.name.startswith("."):
        return False
    if path.name.lower().endswith(DICOM_ENDINGS):
        return True
    try:
        with path.open("rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def file_meta(head: bytes) -> dict[str, str]:
    """The File Meta Information (group 0002) of a Part 10 file, as ``{"0002|0002": uid}``.

    Group 0002 follows the "DICM" marker and is always explicit VR little endian.

    Args:
        head: the file's first bytes (the group is short: a few hundred bytes).

    Returns:
        The group's text elements, keyed like SimpleITK's tags; empty when the
        file has no "DICM" marker or the group is cut off from its start.
    """
    found: dict[str, str] = {}
    if head[128:132] != b"DICM":
        return found
    at = 132
    while at + 8 <= len(head):
        group, element = struct.unpack_from("<HH", head, at)
        if group != 0x0002:
            break
        vr = head[at + 4 : at + 6]
        if vr in _LONG_VRS:
            if at + 12 > len(head):
                break
            length, at = struct.unpack_from("<I", head, at + 8)[0], at + 12
        else:
            length, at = struct.unpack_from("<H", head, at + 6)[0], at + 8
        if at + length > len(head):
            break
        if vr in (b"UI", b"SH", b"LO", b"AE", b"CS"):
            value = head[at : at + length].decode("ascii", "replace").strip(" \x00")
            found[f"0002|{element:04x}"] = value
        at += length
    return found


@dataclass(frozen=True)
class LeftOut:
    """A file that looks like DICOM but is in no series GDCM read.

    Attributes:
        path: the file.
        damaged: True for a slice that cannot be read (truncated, damaged,
            empty); False for a DICOM object without an image.
        reason: what is wrong with it (damaged) or what it is (not an image).
    """

    path: Path
    damaged: bool
    reason: str


def left_out_files(folder: Path, series_files: list[str], sop_class: str | None) -> list[LeftOut]:
    """The files of ``folder`` that look like DICOM but are not among ``series_files``.

    A DICOMDIR is left out silently. A file GDCM cannot read on its own is
    damaged when it is, or may be, an image: it holds Pixel Data (7FE0,0010),
    is of the series' SOP class, or its class cannot be read from its file
    meta group. One whose meta group names another class and that holds no
    pixel data (a structured report, a presentation state) is returned as
    not an image.

    Args:
        folder: the series folder (not searched below).
        series_files: the files GDCM put in the series (paths; names compared).
        sop_class: the series' MediaStorageSOPClassUID, or None when unknown.

    Returns:
        The left-out files sorted by name, each with why.
    """
    from mrisr.io.itk_formats import simpleitk  # a left-out file only, rarely

    used = {Path(name).name for name in series_files}
    found = []
    for path in sorted(folder.iterdir()):
        if path.name in used or not path.is_file() or not looks_like_dicom(path):
            continue
        reader = simpleitk().ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            pass
        else:  # an image GDCM reads on its own, yet put in no series
            reason = "an image GDCM reads on its own, but puts in no series"
            found.append(LeftOut(path, True, reason))
            continue
        item = _diagnose(path, sop_class)
        if item is not None:
            found.append(item)
    return found


def _diagnose(path: Path, sop_class: str | None) -> LeftOut | None:
    """Why GDCM could not read ``path``; None for a DICOMDIR."""
    size = path.stat().st_size
    if size == 0:
        return LeftOut(path, True, "empty: 0 bytes")
    with path.open("rb") as stream, mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as raw:
        meta = file_meta(raw[:65536])
        kind = meta.get("0002|0002")
        if kind == MEDIA_DIRECTORY:
            return None
        if raw[128:132] != b"DICM":
            return LeftOut(
                path,
                True,
                "named like a DICOM file, but without the DICM marker at byte 128 and "
                "unreadable: damaged, or not DICOM",
            )
        pixels = raw.find(_PIXEL_DATA_TAG, 132)
        if pixels < 0:
            if kind and kind != sop_class:
                return LeftOut(path, False, f"no image: SOP class {kind}")
            return LeftOut(
                path, True, f"truncated or damaged: {size} bytes and no Pixel Data (7FE0,0010)"
            )
        end = _pixel_data_end(raw, pixels, meta.get("0002|0010") == IMPLICIT_VR)
    if end is not None and end > size:
        return LeftOut(
            path,
            True,
            f"truncated: {size} bytes where its Pixel Data runs to byte {end}",
        )
    return LeftOut(path, True, "a DICOM file (DICM marker) that cannot be read: damaged")


def _pixel_data_end(raw: mmap.mmap, at: int, implicit: bool) -> int | None:
    """The byte where the Pixel Data element starting at ``at`` ends, None when unknown.

    None for encapsulated (compressed) pixel data, whose length is undefined,
    and when the bytes after the tag are not a Pixel Data header.
    """
    try:
        if implicit:
            length, start = struct.unpack_from("<I", raw, at + 4)[0], at + 8
        elif raw[at + 4 : at + 6] in (b"OB", b"OW"):
            length, start = struct.unpack_from("<I", raw, at + 8)[0], at + 12
        else:
            return None
    except struct.error:
        return None
    return None if length == 0xFFFFFFFF else start + length

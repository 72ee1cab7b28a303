"""Zip archives from untrusted files, checked before anything is decompressed.

Used by every loader that opens a zip (.npz, .keras; the .pt reader admits only
stored records no larger than the file).  ``check_zip`` refuses duplicate member
names, encrypted members, compression methods other than stored / deflate,
members whose data would lie past the end of the file, and archives whose
members declare more than ``MAX_RATIO`` times the archive's size in total (a
zip bomb) -- small archives may always expand to ``MIN_BUDGET`` bytes.
zipfile never returns more bytes than a member declares, so the declared sizes
bound what reading can allocate.
"""
import os
import zipfile

from ..errors import FormatError

MAX_RATIO = 100
MIN_BUDGET = 64 << 20


def check_zip(zf, path):
    """-> total declared uncompressed bytes; raises FormatError for a hostile archive."""
    size = os.path.getsize(path)
    seen = set()
    total = 0
    for info in zf.infolist():
        name = info.filename
        if name in seen:
            raise FormatError(f"{path}: the zip archive holds member {name!r} twice")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise FormatError(f"{path}: zip member {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise FormatError(f"{path}: zip member {name!r} uses compression method "
                              f"{info.compress_type}; expected stored or deflate")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise FormatError(f"{path}: stored zip member {name!r} declares {info.file_size} "
                              f"bytes but occupies {info.compress_size}")
        if info.header_offset + info.compress_size > size:
            raise FormatError(f"{path}: zip member {name!r} lies past the end of the file "
                              f"({size} bytes); truncated or corrupt")
        total += info.file_size
    budget = max(MIN_BUDGET, MAX_RATIO * size)
    if total > budget:
        raise FormatError(f"{path}: the zip members declare {total:,} bytes uncompressed, more "
                          f"than {MAX_RATIO}x the archive's {size:,} bytes (a zip bomb?); refused")
    return total

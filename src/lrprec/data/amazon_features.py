"""The Amazon 2014 image-features file ``image_features_<Cat>.b`` [M15]: its record layout, cheap checks,
the scan that maps records to the metadata's items, and the streaming copy into ``features.npy``.

A record is a 10-byte ASCII ASIN and 4096 little-endian float32 (16,394 bytes); the file has no
header. It is read through numpy memmaps of bounded windows, so memory stays at one window
whatever the file size. A truncated last record is counted and skipped; records for ASINs not
in the metadata, and repeated ASINs (first kept), are counted (``B_SKIPS``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lrprec.data.images import npy_header
from lrprec.data.importing.assembly import FeatureRows
from lrprec.data.importing.builder import CatalogBuilder
from lrprec.data.importing.lines import is_gzip
from lrprec.errors import UsageError

FEATURE_DIM = 4096
ASIN_BYTES = 10
_WINDOW = 2048  # .b records mapped at a time
B_SKIPS = ("features_truncated_records", "features_unknown_item", "features_duplicate_records")


def feature_dtype(dim: int = FEATURE_DIM) -> np.dtype:
    """One ``.b`` record: 10 ASCII bytes of ASIN, then ``dim`` little-endian float32."""
    return np.dtype([("asin", f"S{ASIN_BYTES}"), ("f", "<f4", (dim,))])


def _window(path: Path, dtype: np.dtype, start: int, count: int) -> np.memmap:
    return np.memmap(path, dtype=dtype, mode="r", offset=start * dtype.itemsize, shape=(count,))


def scan_features(path: Path, builder: CatalogBuilder, *, dim: int = FEATURE_DIM, progress: bool | None = None) -> FeatureRows:
    """Map each builder item to its record in a ``.b`` file, reading only the ASIN bytes.

    The file is mapped a window at a time (a whole-file map would leave every touched page
    resident), so memory stays at a window whatever the file size.
    """
    from tqdm import tqdm

    report = builder.report
    dt = feature_dtype(dim)
    n_rec, tail = check_features_file(path, dim)
    if tail:
        report.skip("features_truncated_records", 1, f"{path}: the last record is truncated ({tail} of {dt.itemsize} bytes) and skipped")
    record = np.full(len(builder), -1, dtype=np.int64)
    matched = 0
    with tqdm(total=n_rec, desc=f"features {path.name}", unit="rec", disable=None if progress is None else not progress) as bar:
        for start in range(0, n_rec, _WINDOW):
            count = min(_WINDOW, n_rec - start)
            mm = _window(path, dt, start, count)
            asins = np.array(mm["asin"])  # copies 10 bytes per record
            del mm
            for k, raw in enumerate(asins.tolist()):
                asin = raw.decode("ascii", "replace").strip()
                row = builder.row_of(asin)
                if row < 0:
                    report.skip("features_unknown_item", 1, f"first at record {start + k}: ASIN {asin!r} is not in the metadata")
                elif record[row] >= 0:
                    report.skip("features_duplicate_records", 1, f"first at record {start + k}: ASIN {asin!r} repeats (the first record is kept)")
                else:
                    record[row] = start + k
                    matched += 1
            bar.update(count)
    report.count("features_records", n_rec)
    if matched == 0:
        raise UsageError(f"no record of {path} matches an item of the metadata (first ASINs: "
                         f"{', '.join(repr(a) for a in _first_asins(path, dt))}); is it the features file of this category?")

    def write(out: Path, records: np.ndarray) -> None:
        write_features(path, records, out, dim=dim, progress=progress)

    return FeatureRows(record=record, dim=dim, write=write)


def _first_asins(path: Path, dt: np.dtype, k: int = 3) -> list[str]:
    mm = _window(path, dt, 0, min(k, path.stat().st_size // dt.itemsize))
    out = [a.decode("ascii", "replace") for a in np.array(mm["asin"]).tolist()]
    del mm
    return out


def check_features_file(path: Path, dim: int = FEATURE_DIM) -> tuple[int, int]:
    """Cheap checks of a ``.b`` file before any long work: not gzip, at least one record, and
    records that start with printable ASCII ASINs. Returns (complete records, tail bytes)."""
    dt = feature_dtype(dim)
    if is_gzip(path):
        raise UsageError(f"{path} is gzip-compressed; the image-features file is read raw (gunzip it first)")
    size = path.stat().st_size
    n_rec, tail = divmod(size, dt.itemsize)
    if n_rec == 0:
        raise UsageError(f"{path} holds no complete feature record ({size} bytes; a record is {dt.itemsize} bytes: "
                         f"{ASIN_BYTES}-byte ASIN + {dim} float32)")
    mm = _window(path, dt, 0, min(16, n_rec))
    head = np.array(mm["asin"]).tolist()
    del mm
    printable = sum(1 for a in head if a and all(32 < c < 127 for c in a.rstrip(b"\0 ")))
    if printable * 2 < len(head):
        raise UsageError(f"{path} does not look like an Amazon image-features file: its records do not start with "
                         f"a {ASIN_BYTES}-byte ASCII ASIN (record = {ASIN_BYTES} bytes + {dim} float32)")
    return n_rec, tail


def write_features(path: Path, records: np.ndarray, out: Path, *, dim: int = FEATURE_DIM, progress: bool | None = None) -> None:
    """Copy the given ``.b`` records, in that order, into a float32 ``(len(records), dim)`` ``.npy``.

    Records are read through windowed memmaps and written with plain writes, so resident
    memory stays at one window; ascending ``records`` make it one sequential pass.
    """
    from tqdm import tqdm

    dt = feature_dtype(dim)
    records = np.asarray(records, dtype=np.int64)
    if records.size > 1 and not (np.diff(records) > 0).all():
        raise UsageError("write_features needs strictly ascending record numbers")
    with open(out, "wb") as f, tqdm(total=int(records.size), desc="copy features", unit="rec", disable=None if progress is None else not progress) as bar:
        f.write(npy_header("<f4", (int(records.size), dim)))
        k = 0
        while k < records.size:
            lo = int(records[k])
            # a run of requested records that fits in one window starting at lo
            end = int(np.searchsorted(records[k:], lo + _WINDOW, side="left")) + k
            if end == k:
                end = k + 1
            hi = int(records[k:end].max()) + 1
            mm = _window(path, dt, lo, hi - lo)
            block = np.ascontiguousarray(mm["f"][records[k:end] - lo], dtype="<f4")
            del mm
            f.write(memoryview(block))  # no extra copy
            bar.update(end - k)
            k = end

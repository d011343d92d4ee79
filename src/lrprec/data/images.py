"""Decode item images into the catalog's uint8 (N, S, S, 3) cache ``images.npy``, streaming.

Images come from a folder (``<item_id>.<jpg|jpeg|png|webp>``, or a file named in an items
table, or the basename of an Amazon image URL). Each image is converted to RGB (transparency
composited on white), resized so its longer side is S, and centred on a white S x S square
(product photos are shot on white, so the padding does not add an edge the model could learn).

Missing and corrupt images are counted. The importers' default is to **drop** such items (a
model cannot learn anything true from a placeholder, and the paper only uses items with an
image); ``keep_missing=True`` keeps them with a uniform gray placeholder instead. Either way
the counts and the first few offending ids are reported.

The cache is written row by row with plain file writes behind an ``.npy`` header, so memory
stays bounded by a small batch however many images there are (a shared memory map would
keep every written page resident).
"""
from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from lrprec.errors import LrprecError, UsageError

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
PLACEHOLDER_VALUE = 128  # gray, for items kept without a usable image
PAD_VALUE = 255  # white, like the background of product photos
_BATCH = 256

class ImageDecodeError(LrprecError):
    """An image file that exists but cannot be decoded."""


def load_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """Decode one image file into a uint8 (size, size, 3) array: RGB, aspect kept, centre-padded white."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (size, size))  # JPEG: let libjpeg downscale while decoding (much faster)
            im.load()
            rgb = _to_rgb(im)
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError) as exc:
        raise ImageDecodeError(f"{path}: {exc}") from None
    w, h = rgb.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{path}: empty image")
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=2.0)
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = np.asarray(rgb, dtype=np.uint8)
    return canvas


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB view of any mode; alpha (also palette transparency) is composited onto white."""
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (PAD_VALUE, PAD_VALUE, PAD_VALUE, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


class ImageFolder:
    """A flat folder of item images; finds each item's file in one directory scan."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        if not self.root.is_dir():
            raise NotADirectoryError(f"--images must be a folder of <item_id>.<jpg|png|webp> files: {self.root}")

    def locate(self, item_ids: Sequence[str], hints: Sequence[str | list[str] | None] | None = None) -> list[Path | None]:
        """Path of each item's image or None. Looks for ``<item_id>.<ext>`` first, then the
        file name of each hint (e.g. the basename of an image URL; a list tries several).
        Only wanted names are kept in memory, so a huge folder costs one scan, not a huge
        dictionary."""
        wanted: set[str] = set(item_ids)
        hint_names = [_hint_names(h) for h in (hints or [None] * len(item_ids))]
        wanted_files: set[str] = {h for names in hint_names for h in names}
        by_stem: dict[str, tuple[int, str]] = {}
        present: set[str] = set()
        with os.scandir(self.root) as it:
            for entry in it:
                name = entry.name
                if name in wanted_files:
                    present.add(name)
                stem, ext = os.path.splitext(name)
                ext = ext.lower()
                if ext in IMAGE_EXTENSIONS and stem in wanted:
                    rank = IMAGE_EXTENSIONS.index(ext)
                    if stem not in by_stem or rank < by_stem[stem][0]:  # deterministic: jpg < jpeg < png < webp
                        by_stem[stem] = (rank, name)
        out: list[Path | None] = []
        for iid, names in zip(item_ids, hint_names):
            if iid in by_stem:
                out.append(self.root / by_stem[iid][1])
            else:
                out.append(next((self.root / h for h in names if h in present), None))
        return out


def _hint_names(hint: str | list[str] | None) -> list[str]:
    if not hint:
        return []
    return [b for b in (_basename(h) for h in ([hint] if isinstance(hint, str) else hint) if isinstance(h, str) and h) if b]


def _basename(url_or_path: str) -> str:
    return url_or_path.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


@dataclass
class ImageStats:
    """What decoding found: which rows were usable, and counts and examples of the rest."""

    ok: np.ndarray  # bool per input row: the image decoded
    written: int  # rows in the cache (ok rows, or all rows with placeholders)
    missing: int = 0
    corrupt: int = 0
    examples: dict[str, list[str]] = field(default_factory=lambda: {"missing": [], "corrupt": []})

    def report(self, keep_missing: bool) -> dict:
        """The import report's ``images`` entry: decoded, missing and corrupt counts, the policy, the first missing / corrupt ids."""
        return {
            "decoded": int(self.ok.sum()),
            "missing": self.missing,
            "corrupt": self.corrupt,
            "policy": "placeholder" if keep_missing else "drop",
            "first_missing": self.examples["missing"],
            "first_corrupt": self.examples["corrupt"],
        }


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` (v1.0) header for a C-ordered array of this dtype and shape."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(int(s) for s in shape)})
    return buf.getvalue()


def decode_images(
    paths: Sequence[Path | None],
    size: int,
    out_path: str | os.PathLike,
    *,
    keep_missing: bool = False,
    names: Sequence[str] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    max_examples: int = 10,
) -> ImageStats:
    """Decode ``paths`` in order into ``out_path`` (an ``.npy`` uint8 (M, size, size, 3) file).

    ``None`` entries are missing images. With ``keep_missing`` every row is written (gray
    placeholder for missing/corrupt ones, M = len(paths)); otherwise only the usable ones
    (M = ok.sum(), in input order). Pillow releases the GIL while decoding, so a few
    threads give a real speed-up; output order never depends on them.
    """
    from tqdm import tqdm

    if size < 8:
        raise UsageError(f"--image-size must be at least 8, got {size}")
    n = len(paths)
    names = list(names) if names is not None else [str(p) for p in paths]
    ok = np.zeros(n, dtype=bool)
    stats = ImageStats(ok=ok, written=0)
    placeholder = np.full((size, size, 3), PLACEHOLDER_VALUE, dtype=np.uint8)
    workers = workers or min(4, os.cpu_count() or 1)

    def one(path: Path | None) -> np.ndarray | str:
        if path is None:
            return "missing"
        try:
            return load_image(path, size)
        except FileNotFoundError:
            return "missing"
        except ImageDecodeError:
            return "corrupt"

    header_len = len(npy_header("|u1", (0, size, size, 3)))
    with open(out_path, "wb") as f, ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=n, desc="images", unit="img", disable=_disable(progress)) as bar:
        f.write(b"\0" * header_len)  # the real header goes here once the row count is known
        for start in range(0, n, _BATCH):
            chunk = list(paths[start:start + _BATCH])
            for k, res in enumerate(pool.map(one, chunk)):
                row = start + k
                if isinstance(res, str):
                    setattr(stats, res, getattr(stats, res) + 1)
                    if len(stats.examples[res]) < max_examples:
                        stats.examples[res].append(names[row])
                    if keep_missing:
                        f.write(placeholder.tobytes())
                        stats.written += 1
                else:
                    ok[row] = True
                    f.write(res.tobytes())
                    stats.written += 1
            bar.update(len(chunk))
        header = npy_header("|u1", (stats.written, size, size, 3))
        if len(header) != header_len:  # numpy pads headers for growth, so this cannot happen
            raise RuntimeError("npy header length changed; cannot finish the image cache in place")
        f.seek(0)
        f.write(header)
    return stats


def _disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows bars only on a terminal."""
    return None if progress is None else not progress


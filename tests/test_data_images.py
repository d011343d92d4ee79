"""Image decoding into the uint8 cache: resize/pad, folders, missing and corrupt files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lrprec.data.images import PLACEHOLDER_VALUE, ImageDecodeError, ImageFolder, decode_images, load_image


def test_load_image_resizes_and_pads(tmp_path):
    Image.new("RGB", (100, 50), (10, 20, 30)).save(tmp_path / "wide.png")
    a = load_image(tmp_path / "wide.png", 32)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert (a[8:24, :] == (10, 20, 30)).all()  # 100x50 -> 32x16, centred vertically
    assert (a[:8] == 255).all() and (a[24:] == 255).all()  # white padding


def test_load_image_modes(tmp_path):
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")  # fully transparent -> white
    Image.new("L", (8, 8), 77).save(tmp_path / "gray.jpg")
    Image.new("RGB", (8, 8), (0, 0, 200)).save(tmp_path / "blue.webp", lossless=True)
    assert (load_image(tmp_path / "clear.png", 8) == 255).all()
    assert abs(int(load_image(tmp_path / "gray.jpg", 8)[4, 4, 0]) - 77) <= 2
    assert tuple(load_image(tmp_path / "blue.webp", 8)[4, 4]) == (0, 0, 200)


def test_load_image_corrupt(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    for name in ("bad.jpg", "half.jpg"):
        with pytest.raises(ImageDecodeError):
            load_image(tmp_path / name, 16)
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "none.jpg", 16)


def test_folder_locate(tmp_path):
    for name in ("a.png", "a.webp", "B.JPG", "c.gif", "51xyz.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = ImageFolder(tmp_path).locate(["a", "B", "c", "d"], [None, None, None, "http://img/I/51xyz.jpg"])
    assert [p.name if p else None for p in found] == ["a.png", "B.JPG", None, "51xyz.jpg"]
    with pytest.raises(FileNotFoundError):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        ImageFolder(tmp_path / "a.png")


@pytest.mark.parametrize("keep", [False, True])
def test_decode_images_counts(tmp_path, keep):
    Image.new("RGB", (5, 5), (200, 0, 0)).save(tmp_path / "r.png")
    Image.new("RGB", (5, 5), (0, 200, 0)).save(tmp_path / "g.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    paths = [tmp_path / "r.png", None, tmp_path / "bad.png", tmp_path / "gone.png", tmp_path / "g.png"]
    stats = decode_images(paths, 8, tmp_path / "out.npy", keep_missing=keep, names=list("abcde"), workers=2)
    arr = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert stats.ok.tolist() == [True, False, False, False, True]
    assert (stats.missing, stats.corrupt) == (2, 1)
    assert stats.examples == {"missing": ["b", "d"], "corrupt": ["c"]}
    if keep:
        assert arr.shape == (5, 8, 8, 3) and (arr[1] == PLACEHOLDER_VALUE).all() and tuple(arr[4, 0, 0]) == (0, 200, 0)
    else:
        assert arr.shape == (2, 8, 8, 3) and tuple(arr[0, 0, 0]) == (200, 0, 0) and tuple(arr[1, 0, 0]) == (0, 200, 0)

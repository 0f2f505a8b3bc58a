"""classify-cli's image decoder (guest/classify-cli/decode.py), run here on CPython: the
same pure-Python code the guest runs, checked against numpy-built PNGs with every
colour type, bit depth and filter, against Pillow's files, and on broken files."""
from __future__ import annotations

import importlib.util
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

from support.repo import ROOT

_spec = importlib.util.spec_from_file_location("classify_cli_decode", ROOT / "guest" / "classify-cli" / "decode.py")
decode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decode)

CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
DEPTHS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8),
          (4, 8), (4, 16), (6, 8), (6, 16)]


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def filtered(rows: np.ndarray, filters: list[int], bpp: int) -> bytes:
    """Each row of bytes filtered with its PNG filter type, as an encoder does."""
    out, prev = [], np.zeros(rows.shape[1], np.int32)
    for row, kind in zip(rows.astype(np.int32), filters):
        a = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])[:len(row)]
        c = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])[:len(row)]
        b = prev
        if kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        else:
            predictor = [0 * a, a, b, (a + b) // 2][kind]
        out.append(bytes([kind]) + ((row - predictor) & 255).astype(np.uint8).tobytes())
        prev = row
    return b"".join(out)


def encode_png(samples: np.ndarray, colour: int, depth: int, filters: list[int], palette: bytes = b"") -> bytes:
    """samples: [height, width, channels] integers of `depth` bits."""
    height, width, channels = samples.shape
    if depth == 16:
        rows = samples.astype(">u2").view(np.uint8).reshape(height, -1)
    elif depth < 8:  # pack each row's samples MSB first, padded to a whole byte
        bits = np.unpackbits(samples.astype(np.uint8).reshape(height, -1, 1), axis=2)[:, :, 8 - depth:]
        rows = np.packbits(bits.reshape(height, -1), axis=1)
    else:
        rows = samples.astype(np.uint8).reshape(height, -1)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = filtered(rows, filters, max(1, channels * depth // 8))
    return (decode.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + (chunk(b"PLTE", palette) if palette else b"")
            + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b""))


def expected_rgb(samples: np.ndarray, colour: int, depth: int, palette: bytes) -> np.ndarray:
    if colour == 3:
        table = np.frombuffer(palette, np.uint8).reshape(-1, 3)
        return table[samples[:, :, 0]]
    if depth == 16:
        samples = samples >> 8
    elif depth < 8 and colour == 0:
        samples = samples * (255 // (2 ** depth - 1))
    colours = samples[:, :, :3] if colour in (2, 6) else np.repeat(samples[:, :, :1], 3, axis=2)
    return colours.astype(np.uint8)


@given(st.sampled_from(DEPTHS), st.integers(1, 19), st.integers(1, 6), st.integers(0, 2**32 - 1), st.data())
def test_png_of_every_colour_type_depth_and_filter(kind, width, height, seed, data):
    colour, depth = kind
    rng = np.random.default_rng(seed)
    filters = data.draw(st.lists(st.integers(0, 4), min_size=height, max_size=height))
    palette = b""
    if colour == 3:
        entries = rng.integers(1, 2 ** depth + 1)
        palette = rng.integers(0, 256, 3 * entries, dtype=np.uint8).tobytes()
        samples = rng.integers(0, entries, (height, width, 1))
    else:
        samples = rng.integers(0, 2 ** depth, (height, width, CHANNELS[colour]))
    got_w, got_h, rgb = decode.decode_png(encode_png(samples, colour, depth, filters, palette))
    assert (got_w, got_h) == (width, height)
    np.testing.assert_array_equal(np.frombuffer(rgb, np.uint8).reshape(height, width, 3),
                                  expected_rgb(samples, colour, depth, palette))


@pytest.mark.parametrize("fmt, mode", [*(("PNG", mode) for mode in ("RGB", "RGBA", "L", "LA", "P", "1")),
                                       ("PPM", "RGB"), ("PPM", "L")])
def test_pillow_files_decode_as_pillow_converts_them(fmt, mode, tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    rgb[10:20] = rgb[10:11]  # runs of equal rows make Pillow's encoder pick other filters
    img = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"img.{fmt.lower()}"
    img.save(path, fmt)
    width, height, got = decode.read_image(path)
    with Image.open(path) as reread:
        want = np.asarray(reread.convert("RGB"))
    np.testing.assert_array_equal(np.frombuffer(got, np.uint8).reshape(height, width, 3), want)


def test_sample_photos_decode_as_pillow_does():
    for path in sorted((ROOT / "images").glob("*.png")):
        width, height, got = decode.read_image(path)
        with Image.open(path) as img:
            want = np.asarray(img.convert("RGB"))
        np.testing.assert_array_equal(np.frombuffer(got, np.uint8).reshape(height, width, 3), want)


@pytest.mark.parametrize("maxval", [1, 15, 255, 1000, 65535])
def test_pnm_scales_any_maxval_to_0_255(maxval):
    values = np.array([[0, maxval // 3, maxval]], dtype=np.int64)
    raster = values.astype(">u2" if maxval > 255 else np.uint8).tobytes()
    width, height, rgb = decode.decode_pnm(b"P5\n# a comment\n3 1\n%d\n" % maxval + raster)
    assert (width, height) == (3, 1)
    want = (values * 255 + maxval // 2) // maxval
    np.testing.assert_array_equal(np.frombuffer(rgb, np.uint8).reshape(3, 3), np.repeat(want.T, 3, axis=1))


def _interlaced() -> bytes:
    ihdr = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 1)
    return decode.PNG_SIGNATURE + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(30))) + chunk(b"IEND", b"")


@pytest.mark.parametrize("damage, message", [
    (lambda png: png[:len(png) // 2], "truncated PNG"),
    (lambda png: png[:40] + bytes([png[40] ^ 1]) + png[41:], "bad CRC"),
    (lambda png: _interlaced(), "interlaced"),
    (lambda png: b"P3\n1 1\n255\n0 0 0\n", "P3 netpbm files are not supported"),
    (lambda png: b"GIF89a", "not a PNG, PGM or PPM file"),
    (lambda png: b"P6\n4 4\n255\n" + bytes(10), "truncated PGM/PPM"),
])
def test_broken_files_get_one_clear_error(damage, message, tmp_path):
    path = tmp_path / "bad"
    png = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(png, "PNG")
    path.write_bytes(damage(png.getvalue()))
    with pytest.raises(decode.ImageError, match=message):
        decode.read_image(path)

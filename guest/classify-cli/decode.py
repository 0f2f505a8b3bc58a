"""Image files to uint8 RGB pixels, in pure Python (the guest has no Pillow and no numpy).

    width, height, rgb = read_image("/images/cat.png")   # rgb: bytes, height * width * 3

Reads binary PGM/PPM (P5, P6) and PNG (every colour type and bit depth, not interlaced;
transparency is dropped, as Pillow's convert("RGB") does). Per-pixel work runs in C
wherever the format allows it (slicing, `bytes.translate`, big-integer arithmetic);
only PNG's Average and Paeth filters, where each byte depends nonlinearly on the one
just decoded, need a Python loop per byte.
"""
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


class ImageError(ValueError):
    """The file is not an image this module can decode; the message says why."""


def read_image(path):
    """(width, height, rgb) of the image file at `path`; raises ImageError or OSError."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(PNG_SIGNATURE):
        return decode_png(data)
    if data[:2] in (b"P5", b"P6"):
        return decode_pnm(data)
    if data[:2] in (b"P1", b"P2", b"P3", b"P4", b"P7"):
        raise ImageError(f"{data[:2].decode()} netpbm files are not supported; use binary PGM (P5) or PPM (P6)")
    raise ImageError("not a PNG, PGM or PPM file")


def decode_pnm(data):
    """Binary PGM (P5, grey) or PPM (P6, RGB), any maxval."""
    fields, pos = [], 2
    while len(fields) < 3:  # width, height, maxval: separated by whitespace and comments
        while pos < len(data) and data[pos] in b" \t\r\n":
            pos += 1
        if pos < len(data) and data[pos] == ord("#"):
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        start = pos
        while pos < len(data) and data[pos] in b"0123456789":
            pos += 1
        if start == pos:
            raise ImageError("truncated or malformed PGM/PPM header")
        fields.append(int(data[start:pos]))
    width, height, maxval = fields
    if not (width and height and 0 < maxval < 65536):
        raise ImageError(f"bad PGM/PPM header: {width}x{height}, maxval {maxval}")
    channels = 3 if data[:2] == b"P6" else 1
    size = 1 if maxval < 256 else 2
    count = width * height * channels
    raster = data[pos + 1:pos + 1 + count * size]  # one whitespace byte ends the header
    if len(raster) < count * size:
        raise ImageError(f"truncated PGM/PPM: {len(raster)} of {count * size} pixel bytes")
    half = maxval // 2
    if size == 2:  # rare enough for a per-sample loop
        samples = bytes([(v * 255 + half) // maxval for v in struct.unpack(f">{count}H", raster)])
    elif maxval != 255:
        samples = raster.translate(bytes(min(255, (v * 255 + half) // maxval) for v in range(256)))
    else:
        samples = raster
    return width, height, _to_rgb(samples, channels)


def decode_png(data):
    """A non-interlaced PNG of any colour type and bit depth."""
    header, palette, idat, pos = None, None, [], len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) < length or len(crc) < 4:
            raise ImageError(f"truncated PNG (in chunk {kind.decode('latin-1')})")
        if zlib.crc32(body, zlib.crc32(kind)) != struct.unpack(">I", crc)[0]:
            raise ImageError(f"corrupt PNG: bad CRC in chunk {kind.decode('latin-1')}")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ImageError("corrupt PNG: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise ImageError(f"corrupt PNG: colour type {colour} with bit depth {depth}")
    if interlace:
        raise ImageError("interlaced (Adam7) PNGs are not supported; save the image without interlacing")
    if colour == 3 and palette is None:
        raise ImageError("corrupt PNG: palette image without a PLTE chunk")
    channels = _PNG_CHANNELS[colour]
    row_bytes = (width * channels * depth + 7) // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ImageError(f"corrupt PNG: {e}") from None
    if len(raw) < (row_bytes + 1) * height:
        raise ImageError(f"truncated PNG: {len(raw)} of {(row_bytes + 1) * height} bytes of pixel data")
    samples = unfilter(raw, row_bytes, height, max(1, channels * depth // 8))
    if depth < 8:
        samples = _unpack_bits(samples, row_bytes, width, height, depth, grey=colour == 0)
    elif depth == 16:
        samples = samples[0::2]  # the high byte of each big-endian sample
    if colour == 3:
        return width, height, _from_palette(samples, palette)
    if colour in (4, 6):
        samples, channels = _drop_alpha(samples, channels), channels - 1
    return width, height, _to_rgb(samples, channels)


def unfilter(raw, row_bytes, height, bpp):
    """PNG filtering undone: `height` rows of `row_bytes`, each after its filter-type
    byte; `bpp` is the filters' byte distance to the pixel on the left."""
    out = bytearray(row_bytes * height)
    prev = bytes(row_bytes)
    for y in range(height):
        start = y * (row_bytes + 1)
        kind = raw[start]
        if kind > 4:
            raise ImageError(f"corrupt PNG: row {y} has filter type {kind}")
        line = raw[start + 1:start + 1 + row_bytes]
        row = line if kind == 0 else _FILTERS[kind](line, prev, bpp)
        out[y * row_bytes:(y + 1) * row_bytes] = row
        prev = row
    return bytes(out)


_MASKS = {}  # row length -> (0x7f7f..., 0x8080...)


def _masks(n):
    if n not in _MASKS:
        _MASKS[n] = int.from_bytes(b"\x7f" * n, "little"), int.from_bytes(b"\x80" * n, "little")
    return _MASKS[n]


def _add_bytes(a, b, low, high):
    """Bytewise addition mod 256 of two rows held as big integers: add the low 7 bits of
    each byte (no carry leaves a byte), then each top bit is a7 ^ b7 ^ that carry."""
    return ((a & low) + (b & low)) ^ ((a ^ b) & high)


def _sub(line, prev, bpp):
    # A running sum mod 256 along each channel, as a prefix sum by doubling: after the
    # step with shift s every byte holds the sum of itself and the 2s/bpp bytes before.
    n = len(line)
    low, high = _masks(n)
    row = int.from_bytes(line, "little")
    shift = bpp
    while shift < n:
        row = _add_bytes(row, row << (8 * shift), low, high)
        shift *= 2
    return row.to_bytes(n, "little")


def _up(line, prev, bpp):
    n = len(line)
    low, high = _masks(n)
    return _add_bytes(int.from_bytes(line, "little"), int.from_bytes(prev, "little"), low, high).to_bytes(n, "little")


def _average(line, prev, bpp):
    out = bytearray(len(line))
    for c in range(bpp):
        decoded = bytearray()
        append = decoded.append
        a = 0
        for x, b in zip(line[c::bpp], prev[c::bpp]):
            a = (x + ((a + b) >> 1)) & 255
            append(a)
        out[c::bpp] = decoded
    return out


def _paeth(line, prev, bpp):
    out = bytearray(len(line))
    for c in range(bpp):
        decoded = bytearray()
        append = decoded.append
        a = up_left = 0
        for x, b in zip(line[c::bpp], prev[c::bpp]):
            # distances from p = a + b - c to a, b and c: |b - c|, |a - c|, |a + b - 2c|
            pa = b - up_left
            pb = a - up_left
            pc = pa + pb
            if pa < 0:
                pa = -pa
            if pb < 0:
                pb = -pb
            if pc < 0:
                pc = -pc
            if pa <= pb and pa <= pc:
                a = (x + a) & 255
            elif pb <= pc:
                a = (x + b) & 255
            else:
                a = (x + up_left) & 255
            append(a)
            up_left = b
        out[c::bpp] = decoded
    return out


_FILTERS = (None, _sub, _up, _average, _paeth)


def _unpack_bits(packed, row_bytes, width, height, depth, grey):
    """Samples of 1, 2 or 4 bits to one byte each; grey levels are scaled to 0..255."""
    per_byte, mask = 8 // depth, (1 << depth) - 1
    level = 255 // mask if grey else 1
    table = [bytes(((v >> (8 - depth * (i + 1))) & mask) * level for i in range(per_byte)) for v in range(256)]
    wide = b"".join(map(table.__getitem__, packed))
    stride = row_bytes * per_byte  # each row ends on a byte boundary
    return b"".join(wide[y * stride:y * stride + width] for y in range(height))


def _from_palette(indices, palette):
    rgb = bytearray(len(indices) * 3)
    for c in range(3):  # indices past the palette's end read as black
        rgb[c::3] = indices.translate(palette[c::3].ljust(256, b"\0")[:256])
    return bytes(rgb)


def _drop_alpha(samples, channels):
    if channels == 2:
        return samples[0::2]
    rgb = bytearray(len(samples) // 4 * 3)
    for c in range(3):
        rgb[c::3] = samples[c::4]
    return bytes(rgb)


def _to_rgb(samples, channels):
    if channels == 3:
        return bytes(samples)
    rgb = bytearray(len(samples) * 3)
    rgb[0::3] = rgb[1::3] = rgb[2::3] = samples
    return bytes(rgb)

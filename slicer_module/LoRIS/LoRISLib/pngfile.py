"""Minimal PNG encoder/decoder for label masks (standard library only).

The LoRIS app answers ``/infer/loris`` with the segmentation as a PNG
(uint8, 0/1, same ``H x W`` as the image) and takes corrections as a PNG of
the same kind. Slicer's Python guarantees numpy but not Pillow, so the
module encodes and decodes these small files itself.

Pixel order is the file's: row 0 first, each row left to right; pixel
``(row, col)`` is ``samples[(row * width + col) * channels + channel]``.

Supported: non-interlaced PNGs with bit depth 8 (gray, gray+alpha, RGB, RGBA,
palette -> palette index) and 16-bit gray (big-endian samples). Anything
else raises :class:`PngError` naming the feature.
"""

import struct
import zlib
from dataclasses import dataclass

__all__ = ["PngError", "PngImage", "encode_gray8", "decode"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PngError(ValueError):
    """The bytes are not a PNG this decoder supports."""


@dataclass
class PngImage:
    """Decoded PNG: ``samples`` holds ``height * width * channels`` samples of ``bit_depth`` bits."""

    width: int
    height: int
    channels: int
    bit_depth: int
    samples: bytes

    def first_channel(self):
        """Samples of channel 0 as a list of ints, row-major (``height * width`` values)."""
        step = self.channels * (2 if self.bit_depth == 16 else 1)
        if self.bit_depth == 16:
            return [int.from_bytes(self.samples[i : i + 2], "big") for i in range(0, len(self.samples), step)]
        return list(self.samples[::step])


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def encode_gray8(samples, width, height):
    """8-bit grayscale PNG bytes from ``width * height`` samples (bytes-like or ints 0..255), row-major."""
    width, height = int(width), int(height)
    if width <= 0 or height <= 0:
        raise PngError(f"image size must be positive, got {width}x{height}")
    data = bytes(samples)
    if len(data) != width * height:
        raise PngError(f"expected {width * height} samples for {width}x{height}, got {len(data)}")
    raw = b"".join(b"\x00" + data[r * width : (r + 1) * width] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return _SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(raw, height, stride, bpp):
    out = bytearray(height * stride)
    prev = bytearray(stride)
    pos = 0
    for row in range(height):
        if pos + 1 + stride > len(raw):
            raise PngError("image data is truncated")
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                upleft = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], upleft)) & 0xFF
        elif ftype != 0:
            raise PngError(f"unknown PNG filter type {ftype} in row {row}")
        out[row * stride : (row + 1) * stride] = line
        prev = line
    return bytes(out)


def decode(data):
    """PNG bytes -> :class:`PngImage`; raises :class:`PngError` for anything unsupported or corrupt."""
    data = bytes(data)
    if not data.startswith(_SIGNATURE):
        raise PngError("not a PNG file (bad signature)")
    pos = len(_SIGNATURE)
    header = None
    idat = []
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        if len(payload) != length:
            raise PngError(f"chunk {kind!r} is truncated")
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat.append(payload)
        elif kind == b"IEND":
            break
    if header is None:
        raise PngError("no IHDR chunk")
    width, height, bit_depth, color_type, _, _, interlace = header
    if color_type not in _CHANNELS:
        raise PngError(f"unknown PNG color type {color_type}")
    if interlace:
        raise PngError("interlaced PNGs are not supported")
    if not (bit_depth == 8 or (bit_depth == 16 and color_type == 0)):
        raise PngError(f"bit depth {bit_depth} with color type {color_type} is not supported")
    channels = _CHANNELS[color_type]
    bpp = channels * bit_depth // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise PngError(f"image data is corrupt: {exc}") from exc
    samples = _unfilter(raw, height, width * bpp, bpp)
    return PngImage(width=width, height=height, channels=channels, bit_depth=bit_depth, samples=samples)

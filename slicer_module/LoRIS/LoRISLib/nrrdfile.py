"""Minimal NRRD reader for the anomaly map (standard library only).

``/infer/loris_anomaly_map`` answers with a float32 ``(H, W)`` map written as
NRRD (the app writes it raw with pynrrd; SimpleITK's raw or gzip files read the
same): ``sizes: W H`` (x = column fastest), origin 0, spacing 1. The module
reads the samples here and puts them on the image volume's own pixel grid, so
the overlay lines up with the image whatever geometry Slicer gave the image.

Only the fields needed for that are read: ``type``, ``dimension``, ``sizes``,
``endian``, ``encoding`` (raw | gzip), and detached data is refused.
"""

import gzip
import zlib
from dataclasses import dataclass

__all__ = ["NrrdError", "NrrdImage", "decode"]

# NRRD type name -> numpy/struct type code (size in bytes)
_TYPES = {
    "float": "f4",
    "double": "f8",
    "uchar": "u1",
    "unsigned char": "u1",
    "uint8": "u1",
    "uint8_t": "u1",
    "char": "i1",
    "signed char": "i1",
    "int8": "i1",
    "int8_t": "i1",
    "short": "i2",
    "int16": "i2",
    "int16_t": "i2",
    "ushort": "u2",
    "unsigned short": "u2",
    "uint16": "u2",
    "uint16_t": "u2",
    "int": "i4",
    "int32": "i4",
    "int32_t": "i4",
    "uint": "u4",
    "unsigned int": "u4",
    "uint32": "u4",
    "uint32_t": "u4",
}


class NrrdError(ValueError):
    """The bytes are not an NRRD this reader supports."""


@dataclass
class NrrdImage:
    """Decoded NRRD.

    sizes: samples per axis, fastest first (``[W, H]`` or ``[W, H, 1]``).
    dtype: numpy dtype string with byte order, e.g. ``"<f4"``.
    data: the raw samples, ``prod(sizes)`` of them.
    """

    sizes: list
    dtype: str
    data: bytes
    fields: dict

    @property
    def width(self):
        return self.sizes[0]

    @property
    def height(self):
        return self.sizes[1] if len(self.sizes) > 1 else 1


def decode(blob):
    """NRRD bytes (attached data) -> :class:`NrrdImage`; raises :class:`NrrdError` when unsupported."""
    blob = bytes(blob)
    if not blob.startswith(b"NRRD000"):
        raise NrrdError("not an NRRD file (no NRRD000x magic)")
    end = blob.find(b"\n\n")
    if end < 0:
        raise NrrdError("NRRD header has no end (blank line)")
    header = blob[:end].decode("latin-1").splitlines()[1:]
    payload = blob[end + 2 :]
    fields = {}
    for line in header:
        if line.startswith("#") or ": " not in line:
            continue  # comments and "key:=value" pairs carry nothing needed here
        key, value = line.split(": ", 1)
        fields[key.strip().lower()] = value.strip()
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in fields:
            raise NrrdError(f"NRRD header lacks the '{key}' field")
    if "data file" in fields or "datafile" in fields:
        raise NrrdError("detached NRRD data files are not supported")
    type_name = fields["type"].lower()
    if type_name not in _TYPES:
        raise NrrdError(f"NRRD type '{fields['type']}' is not supported")
    code = _TYPES[type_name]
    sizes = [int(v) for v in fields["sizes"].split()]
    if len(sizes) != int(fields["dimension"]):
        raise NrrdError(f"NRRD 'sizes' {sizes} does not match 'dimension' {fields['dimension']}")
    endian = fields.get("endian", "little").lower()
    if endian not in ("little", "big"):
        raise NrrdError(f"NRRD endian '{endian}' is not supported")
    encoding = fields["encoding"].lower()
    if encoding == "raw":
        data = payload
    elif encoding in ("gzip", "gz"):
        try:
            data = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as exc:
            raise NrrdError(f"NRRD gzip data is corrupt: {exc}") from exc
    else:
        raise NrrdError(f"NRRD encoding '{encoding}' is not supported (raw or gzip only)")
    count = 1
    for s in sizes:
        count *= s
    nbytes = count * int(code[1])
    if len(data) < nbytes:
        raise NrrdError(f"NRRD data is truncated: {len(data)} bytes for {count} samples of {type_name}")
    dtype = ("<" if endian == "little" else ">") + code
    return NrrdImage(sizes=sizes, dtype=dtype, data=data[len(data) - nbytes :], fields=fields)

"""Image files made byte by byte for tests of decoding limits."""

import struct
import zlib


def png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` grey pixels, holding one row of them: a valid
    header, but decoding it would allocate the whole image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(width + 1)))
            + chunk(b"IEND", b""))

"""Safe decoding of untrusted image bytes.

Sizes are checked twice before any pixel is decoded: the byte count, then the
dimensions read from the file header. A 30000x30000 PNG of a few kilobytes is
refused without allocating its pixels. Before that, only JPEG, PNG and WebP, known by their first bytes,
reach Pillow, and only when their header is cheap to read: other formats are named, never parsed, and a
flood of JPEG markers or PNG chunks, JPEG segments that Pillow parses in Python, or PNG chunks that it
inflates, are refused before Pillow reads them.
"""
from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

# How Pillow reads each JPEG marker: the table of them, and two of its handlers.
from PIL.JpegImagePlugin import DQT as JPEG_DQT
from PIL.JpegImagePlugin import MARKER as JPEG_MARKERS
from PIL.JpegImagePlugin import SOF as JPEG_SOF

SUPPORTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
SUPPORTED_MIME = set(SUPPORTED_FORMATS.values())
# A phone's JPEG with a second, preview or depth, image (the MPF extension) is still a JPEG: its first image is the photo.
FORMAT_ALIASES = {"MPO": "JPEG"}
# A progressive JPEG has about ten scans; each costs a pass over the whole image, so thousands of tiny
# ones take a core for seconds (15 s for a 1 MB frame). Counted in the bytes before any pixel is decoded.
MAX_JPEG_SCANS = 100
# The next marker: FF then a code, neither a stuffed 00 nor a restart code (inside a scan's coded data) nor
# another FF (a fill byte, the marker follows).
JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# Pillow reads a JPEG's header, up to the first scan, one marker (and one stray byte) at a time in Python:
# 2.5 million empty markers took 5 s. Cameras write a few dozen (EXIF, XMP, ICC in 64 KB pieces, tables);
# the budgets leave room for far more and cost Pillow a few milliseconds.
MAX_JPEG_HEADER_MARKERS = 1000
MAX_JPEG_STRAY_BYTES = 64 * 1024  # fill and junk bytes between markers
# Within the marker budget, some segments cost Pillow Python work per few bytes: a 10 MB header of them took
# 0.7-1.3 s. Quantization tables (a 64-item list each, and a copy of the rest of the segment): cameras write
# 2-4, under 600 bytes. Frame headers (a loop per 3 bytes): one of at most 773 bytes. Photoshop resources in
# APP13 (a loop per 12 bytes): IPTC and a thumbnail, tens of KB. EXIF blocks in APP1, joined by copying the
# lot each time: phones write one (XMP in APP1 is not EXIF, and is not counted).
MAX_JPEG_TABLE_BYTES = 8 * 1024  # DQT
MAX_JPEG_FRAME_BYTES = 2 * 1024  # SOF, and DHP which Pillow reads as one
MAX_JPEG_PHOTOSHOP_BYTES = 512 * 1024  # APP13 "Photoshop 3.0": about 20 ms for Pillow
MAX_JPEG_EXIF_SEGMENTS = 2  # APP1 "Exif": a second is tolerated, a copy that an editor may have added
JPEG_EXIF, JPEG_PHOTOSHOP = b"Exif\0\0", b"Photoshop 3.0\0"  # the prefixes Pillow looks for
# Pillow also reads every PNG chunk in Python (0.8 million empty ones took 7 s). libpng writes its pixels in
# 8 KB chunks, about 1300 for a 10 MB PNG.
MAX_PNG_CHUNKS = 10_000
# Pillow inflates every compressed text (zTXt, iTXt) and ICC (iCCP) chunk, up to its MAX_TEXT_CHUNK (1 MiB)
# each, from as little as 1 KB: 9500 iCCP chunks in 10 MB took 26 s. Its own MAX_TEXT_MEMORY misses ICC
# profiles, text without a keyword, and streams broken at the end. A PNG has at most one iCCP (the spec says
# so); the inflating a file can ask for, counted at deflate's largest ratio, is capped at 32 MiB (about 0.1 s).
# A photo tagged by ImageMagick (EXIF, XMP, IPTC as compressed text) asks for a few MiB.
MAX_PNG_ICC_PROFILES = 1
MAX_PNG_INFLATE = 32 << 20
DEFLATE_MAX_RATIO = 1032  # deflate's output per input byte, at most
PNG_COMPRESSED = (b"zTXt", b"iTXt", b"iCCP")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Other formats are named from their first bytes, never handed to Pillow: some of its parsers read a whole
# header in Python (an EPS of 10 MB took 9 s to be refused).
OTHER_MAGIC = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"),
    (b"%!PS", "EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"), (b"8BPS", "PSD"), (b"\0\0\1\0", "ICO"),
    (b"\0\0\2\0", "CUR"), (b"icns", "ICNS"), (b"qoif", "QOI"), (b"DDS ", "DDS"), (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"\0\0\0\x0cjP  \r\n\x87\n", "JPEG2000"), (b"\xff\x0a", "JPEG XL"), (b"\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL"),
)
# "BM" starts many a text file too: a BMP is named only when its second header's size is one of the known ones.
BMP_INFO_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}
HEIF_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC", b"mif1": "HEIF",
               b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
# Pixels converted at a time. Beside Pillow's decoded image only the results (BGR, gray) are ever full
# size, never a converted copy: a 6300x6300 PNG peaks at 280 MiB while decoded, not 540 (990 with alpha).
BAND_PIXELS = 1 << 20


class ImageError(ValueError):
    """An image was refused. ``status`` is the HTTP status that fits, ``headers`` any response headers with it."""

    status = 400
    headers: tuple[tuple[str, str], ...] = ()


class ImageTooLarge(ImageError):
    status = 413


class UnsupportedImage(ImageError):
    """An image in a format not accepted; ``format`` names it ("GIF") when its bytes said which."""

    status = 415

    def __init__(self, message: str, format: str | None = None):
        super().__init__(message)
        self.format = format


@dataclass
class DecodedImage:
    """A decoded image: BGR pixels (or None when only gray was asked for) and gray."""

    gray: np.ndarray
    bgr: np.ndarray | None
    format: str

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])


def sniff_format(head: bytes) -> str | None:
    """The format the first bytes of a file say it is in ("JPEG", "GIF", "HEIC"), or None; nothing is parsed."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return HEIF_BRANDS[head[8:12]]
    if len(head) >= 3 and head[0] == ord("P") and head[1] in b"1234567" and head[2] in b" \t\r\n":  # also PBM, PGM, PAM
        return "PPM"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in BMP_INFO_SIZES:
        return "BMP"
    return next((name for magic, name in OTHER_MAGIC if head.startswith(magic)), None)


def _jpeg_header_refusal(data: bytes) -> str | None:
    """Why Pillow's walk of the header, up to the first scan, would cost too much; None when it is cheap.

    Counts what Pillow steps through one by one (markers, stray bytes) and what it parses in Python
    (quantization tables, frame headers, Photoshop resources, EXIF blocks), as it reads them.
    """
    pos, markers, stray, tables, frames, photoshop, exif = 2, 0, 0, 0, 0, 0, 0
    while pos + 1 < len(data) and markers <= MAX_JPEG_HEADER_MARKERS and stray <= MAX_JPEG_STRAY_BYTES:
        if data[pos] != 0xFF:  # junk: skipped here at C speed, by Pillow a byte at a time
            nxt = data.find(b"\xff", pos, pos + MAX_JPEG_STRAY_BYTES + 2)
            stray += (nxt if nxt >= 0 else len(data)) - pos
            if nxt < 0:
                break
            pos = nxt
            continue
        code = 0xFF00 | data[pos + 1]
        if code == 0xFFFF:  # a fill byte before a marker
            stray, pos = stray + 1, pos + 1
            continue
        if code == 0xFF00:
            stray, pos = stray + 2, pos + 2
            continue
        if code not in JPEG_MARKERS or code == 0xFFDA:  # Pillow refuses the file, or the image data starts
            break
        markers += 1
        handler = JPEG_MARKERS[code][2]
        if handler is None:  # no length: SOI, RSTn, and what Pillow takes as such
            pos += 2
            continue
        # Pillow reads the length, then the segment (nothing when the length is below 2).
        length = max(int.from_bytes(data[pos + 2:pos + 4], "big"), 2)
        body, pos = pos + 4, pos + 2 + length
        if handler is JPEG_DQT:
            tables += length
        elif handler is JPEG_SOF:
            frames += length
        elif code == 0xFFED and data.startswith(JPEG_PHOTOSHOP, body, pos):
            photoshop += length
        elif code == 0xFFE1 and data.startswith(JPEG_EXIF, body, pos):
            exif += 1
        if tables > MAX_JPEG_TABLE_BYTES:
            return (f"JPEG has more than {MAX_JPEG_TABLE_BYTES} bytes of quantization tables (DQT markers) "
                    "before its image data; save it again")
        if frames > MAX_JPEG_FRAME_BYTES:
            return (f"JPEG has more than {MAX_JPEG_FRAME_BYTES} bytes of frame headers (SOF markers) "
                    "before its image data; save it again")
        if photoshop > MAX_JPEG_PHOTOSHOP_BYTES:
            return (f"JPEG has more than {MAX_JPEG_PHOTOSHOP_BYTES} bytes of Photoshop data (APP13 markers) "
                    "before its image data; save it again")
        if exif > MAX_JPEG_EXIF_SEGMENTS:
            return (f"JPEG has more than {MAX_JPEG_EXIF_SEGMENTS} EXIF blocks (APP1 markers) "
                    "before its image data; save it again")
    if markers > MAX_JPEG_HEADER_MARKERS or stray > MAX_JPEG_STRAY_BYTES:
        return (f"JPEG has more than {MAX_JPEG_HEADER_MARKERS} markers before its image data "
                f"(or more than {MAX_JPEG_STRAY_BYTES} stray bytes between them); save it again")
    return None


def _jpeg_scan_refusal(data: bytes) -> str | None:
    """Why decoding the image would cost too much: more than ``MAX_JPEG_SCANS`` scans (SOS markers) up to its
    end (EOI), or more than ``MAX_JPEG_HEADER_MARKERS`` markers after its header; None when it is cheap.

    Walks the markers: a segment with a length is skipped whole (an FF DA pair inside an EXIF thumbnail or a
    comment is no scan), and between them the next marker is found at C speed (in a scan's coded data an FF is
    followed by 00 or a restart code). Decoding stops at the EOI after the image's scans, so what follows it,
    such as the video clip a phone's "motion photo" appends (an FF DA pair every 64 KB or so), is not counted.
    """
    scans, markers, pos = 0, 0, 2
    while (found := JPEG_NEXT_MARKER.search(data, pos)) is not None:
        at = found.start()
        code = 0xFF00 | data[at + 1]
        if code == 0xFFD9 and scans:  # the image's end; one before any scan only ends a tables-only stream,
            break                      # and the decoder reads on (the next stream's scans are decoded)
        markers += 1
        scans += code == 0xFFDA
        if scans > MAX_JPEG_SCANS:
            return f"JPEG has more than {MAX_JPEG_SCANS} scans (passes over the image); save it again"
        if markers > MAX_JPEG_HEADER_MARKERS:  # the header's own budget; a photo has a few dozen in all
            return f"JPEG has more than {MAX_JPEG_HEADER_MARKERS} markers; save it again"
        entry = JPEG_MARKERS.get(code)
        has_length = entry is not None and entry[2] is not None
        pos = at + 2 + (int.from_bytes(data[at + 2:at + 4], "big") if has_length else 0)
    return None


def _png_refusal(data: bytes) -> str | None:
    """Why Pillow's walk of the chunks, up to IEND, would cost too much; None when it is cheap."""
    pos, chunks, iccp, inflate = len(PNG_SIGNATURE), 0, 0, 0
    most = PngImagePlugin.MAX_TEXT_CHUNK  # read now: an app may change Pillow's limit
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            return f"PNG has more than {MAX_PNG_CHUNKS} chunks; save it again"
        kind, length = data[pos + 4:pos + 8], int.from_bytes(data[pos:pos + 4], "big")
        if kind == b"IEND":
            break
        start, pos = pos + 8, pos + 12 + length
        if kind not in PNG_COMPRESSED:
            continue
        if kind == b"iCCP":
            iccp += 1
            if iccp > MAX_PNG_ICC_PROFILES:
                return f"PNG has more than {MAX_PNG_ICC_PROFILES} ICC profile (iCCP) among its chunks; save it again"
        elif kind == b"iTXt":  # inflated only when the flag after its keyword (of any length, for Pillow) is set
            key_end = data.find(b"\0", start, start + length)
            if key_end < 0 or data[key_end + 1:key_end + 2] in (b"", b"\0"):
                continue
        inflate += min(most, DEFLATE_MAX_RATIO * length)
        if inflate > MAX_PNG_INFLATE:
            return (f"PNG has compressed text or ICC chunks that inflate to more than {MAX_PNG_INFLATE >> 20} MiB; "
                    "save it again")
    return None


def _check_structure(data: bytes, fmt: str) -> None:
    """Refuse, before Pillow parses it, a file whose header would cost Pillow more than any photo's."""
    if fmt == "JPEG":
        refusal = _jpeg_header_refusal(data) or _jpeg_scan_refusal(data)
        if refusal:
            raise ImageError(refusal)
    elif fmt == "PNG":
        refusal = _png_refusal(data)
        if refusal:
            raise ImageError(refusal)


def _open_header(data: bytes, max_bytes: int, max_pixels: int) -> tuple[Image.Image, str]:
    """The image opened (header read, no pixel decoded) and its format (MPO taken as JPEG), once checked.

    Only JPEG, PNG and WebP reach Pillow, and only once their header is known to be cheap to read.
    """
    if not data:
        raise ImageError("empty image: no bytes received")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise ImageError("not an image: the bytes are not a JPEG, PNG or WebP file")
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"unsupported image format {fmt}; send JPEG, PNG or WebP", format=fmt)
    _check_structure(data, fmt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])  # JPEG's opener also gives MPO
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"image dimensions exceed the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise ImageError(f"corrupt image header: not a readable {fmt} file") from None
    except Exception as exc:
        raise ImageError(f"corrupt image header: {exc}") from None
    if FORMAT_ALIASES.get(img.format, img.format) != fmt:  # cannot happen with formats=[fmt]; never decode a surprise
        img.close()
        raise UnsupportedImage(f"unsupported image format {img.format}; send JPEG, PNG or WebP", format=img.format)
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    if w * h > max_pixels:
        raise ImageTooLarge(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels} pixels")
    return img, fmt


def _to_arrays(img: Image.Image, want_color: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(gray, BGR or None) of a loaded Pillow image of any mode, 8 bits per channel; closes ``img``.

    Colour is converted a band of rows at a time, and gray made from BGR once Pillow's image is released.
    """
    w, h = img.size
    rows = max(1, BAND_PIXELS // w)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = _deep_to_gray(np.asarray(img), rows)
    elif img.mode == "L":
        gray = np.asarray(img)
    else:
        out = np.empty((h, w, 3) if want_color else (h, w), np.uint8)
        code = cv2.COLOR_RGB2BGR if want_color else cv2.COLOR_RGB2GRAY
        for y in range(0, h, rows):
            out[y:y + rows] = cv2.cvtColor(_rgb(img.crop((0, y, w, min(h, y + rows)))), code)
        img.close()
        return (cv2.cvtColor(out, cv2.COLOR_BGR2GRAY), out) if want_color else (out, None)
    img.close()
    return gray, cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR) if want_color else None


def _deep_to_gray(arr: np.ndarray, rows: int) -> np.ndarray:
    """16- or 32-bit gray to 8 bits: scaled from 0-65535 when any value is above 255, else from 0-255."""
    top = 65535.0 if arr.max() > 255 else 255.0
    gray = np.empty(arr.shape, np.uint8)
    for y in range(0, arr.shape[0], rows):
        gray[y:y + rows] = np.clip(arr[y:y + rows].astype(np.float64) / top * 255.0, 0, 255).astype(np.uint8)
    return gray


def _rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image of any 8-bit mode as an RGB array."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto white, as a browser shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))


def decode_image(data: bytes, max_bytes: int, max_pixels: int, want_color: bool = True) -> DecodedImage:
    """Decode JPEG/PNG/WebP bytes, applying the EXIF orientation.

    Raises ImageError (400), ImageTooLarge (413) or UnsupportedImage (415)
    with a message fit to show the user.
    """
    img, fmt = _open_header(bytes(data), max_bytes, max_pixels)
    if fmt == "JPEG" and not want_color and data.rstrip(b"\0").endswith(b"\xff\xd9") and not _has_orientation(img):
        # Fast path for live frames: libjpeg straight to gray.
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ImageError("corrupt or truncated JPEG")
        return DecodedImage(gray=gray, bgr=None, format=fmt)
    try:
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of an image that needs no turn
        gray, bgr = _to_arrays(img, want_color)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError for broken files
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    return DecodedImage(gray=gray, bgr=bgr, format=fmt)


def follow_pixel_limit(max_pixels: int) -> None:
    """Raise Pillow's own decompression-bomb limit to ``max_pixels`` if it is lower.

    Pillow refuses images above its limit (about 89 million pixels) whatever the app allows; raised to
    the app's largest limit, the app's own check, with its clearer message, is the one that applies.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _has_orientation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (0, 1)
    except Exception:
        return False

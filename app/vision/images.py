"""Safe decoding of untrusted image bytes.

Sizes are checked twice before any pixel is decoded: the byte count, then the
dimensions read from the file header. A 30000x30000 PNG of a few kilobytes is
refused without allocating its pixels.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SUPPORTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
SUPPORTED_MIME = set(SUPPORTED_FORMATS.values())
# A phone's JPEG with a second, preview or depth, image (the MPF extension) is still a JPEG: its first image is the photo.
FORMAT_ALIASES = {"MPO": "JPEG"}
# A progressive JPEG has about ten scans; each costs a pass over the whole image, so thousands of tiny
# ones take a core for seconds (15 s for a 1 MB frame). Counted in the bytes before any pixel is decoded.
MAX_JPEG_SCANS = 100
JPEG_SOS = b"\xff\xda"  # start-of-scan marker; never occurs inside entropy-coded data (0xFF is stuffed there)
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
    status = 415


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


def _open_header(data: bytes, max_bytes: int, max_pixels: int) -> tuple[Image.Image, str]:
    """The image opened (header read, no pixel decoded) and its format (MPO taken as JPEG), once checked."""
    if not data:
        raise ImageError("empty image: no bytes received")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"image dimensions exceed the limit of {max_pixels} pixels") from None
    except UnidentifiedImageError:
        raise ImageError("not an image: the bytes are not a JPEG, PNG or WebP file") from None
    except Exception as exc:
        raise ImageError(f"corrupt image header: {exc}") from None
    fmt = FORMAT_ALIASES.get(img.format, img.format)
    if fmt not in SUPPORTED_FORMATS:
        raise UnsupportedImage(f"unsupported image format {img.format}; send JPEG, PNG or WebP")
    scans = data.count(JPEG_SOS) if fmt == "JPEG" else 0
    if scans > MAX_JPEG_SCANS:
        raise ImageError(f"JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are accepted")
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

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


class ImageError(ValueError):
    """An image was refused. ``status`` is the HTTP status that fits."""

    status = 400


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


def _open_header(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
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
    return img


def _to_array(img: Image.Image) -> np.ndarray:
    """Pillow image of any mode to an 8-bit BGR or gray NumPy array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
    if img.mode == "L":
        return np.asarray(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto white, as a browser shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)


def decode_image(data: bytes, max_bytes: int, max_pixels: int, want_color: bool = True) -> DecodedImage:
    """Decode JPEG/PNG/WebP bytes, applying the EXIF orientation.

    Raises ImageError (400), ImageTooLarge (413) or UnsupportedImage (415)
    with a message fit to show the user.
    """
    img = _open_header(bytes(data), max_bytes, max_pixels)
    fmt = FORMAT_ALIASES.get(img.format, img.format)
    if fmt == "JPEG" and not want_color and data.rstrip(b"\0").endswith(b"\xff\xd9") and not _has_orientation(img):
        # Fast path for live frames: libjpeg straight to gray.
        gray = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is None:
            raise ImageError("corrupt or truncated JPEG")
        return DecodedImage(gray=gray, bgr=None, format=fmt)
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
        arr = _to_array(img)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError/ValueError/SyntaxError for broken files
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    if arr.ndim == 2:
        return DecodedImage(gray=arr, bgr=cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR) if want_color else None, format=fmt)
    return DecodedImage(gray=cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY), bgr=arr if want_color else None, format=fmt)


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

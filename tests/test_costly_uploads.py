"""Uploads made to cost CPU are refused cheaply: before Pillow parses a format we do not accept, before it
walks a flood of JPEG markers or PNG chunks, and without a second parse for the page's message. A 413 names
what was too much: the photo's bytes, or the form's fields.

Cost is asserted by structure, not by time: the slow Pillow code is replaced by one that fails the test.
"""
from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import EpsImagePlugin, GifImagePlugin, Image, JpegImagePlugin, PngImagePlugin, PpmImagePlugin

from app.upload.routes import plain_message
from app.vision.images import ImageError, UnsupportedImage, decode_image
from tests.conftest import make_app
from tests.imagegen import encode, exif_rotated_jpeg, fit_frame, pil_bytes
from tests.test_bad_input import post_multipart

MAX_BYTES, MAX_PIXELS = 10_000_000, 40_000_000
FLOOD = 5000  # markers or chunks: a few ms for Pillow, far more than any camera writes, far less than 10 MB


@pytest.fixture(scope="module")
def app():
    return make_app(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)


@pytest.fixture(scope="module")
def grey_jpeg() -> bytes:
    return encode(np.full((480, 640, 3), 128, np.uint8), ".jpg")


@pytest.fixture(scope="module")
def face_frame(faces_dir) -> np.ndarray:
    return fit_frame(cv2.imread(str(faces_dir / "obama.jpg")))


def _never(what: str):
    def fail(self, *args, **kwargs):
        pytest.fail(f"{what} was reached")
    return fail


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def jpeg_with_markers(jpeg: bytes, marker: bytes, count: int) -> bytes:
    """``jpeg`` with ``count`` empty ``marker`` segments (two bytes: FF xx) just after its start marker."""
    return jpeg[:2] + (marker + b"\x00\x02") * count + jpeg[2:]


def png_with_chunks(png: bytes, count: int) -> bytes:
    """``png`` with ``count`` empty ancillary chunks after its header."""
    return png[:33] + _chunk(b"zzZz", b"") * count + png[33:]


def _segment(marker: bytes, body: bytes) -> bytes:
    return marker + struct.pack(">H", len(body) + 2) + body


def jpeg_with_segments(jpeg: bytes, segments: list[bytes]) -> bytes:
    """``jpeg`` with ``segments`` (each marker, length and body) just after its start marker."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def _frame_header(jpeg: bytes) -> bytes:
    """The body of ``jpeg``'s own SOF0 segment."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[at + 4:at + 2 + struct.unpack(">H", jpeg[at + 2:at + 4])[0]]


BOMB = zlib.compress(b"\0" * 1_000_000, 9)  # 1 KB that Pillow would inflate to 1 MB


def png_with_chunks_after_pixels(png: bytes, chunks: list[bytes]) -> bytes:
    """``png`` with ``chunks`` between its last IDAT and IEND, where Pillow reads them once the pixels are loaded."""
    iend = png.index(b"IEND") - 4
    return png[:iend] + b"".join(chunks) + png[iend:]


# -- the decoder -----------------------------------------------------------------------------------

@pytest.mark.parametrize("marker", [b"\xff\xfe", b"\xff\xe0"])  # COM, APP0
@pytest.mark.parametrize("want_color", [True, False])  # an upload, a live frame
def test_a_jpeg_marker_flood_is_refused_before_pillow_walks_it(grey_jpeg, monkeypatch, marker, want_color):
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", _never("Pillow's JPEG header parser"))
    with pytest.raises(ImageError, match="markers before its image data") as refused:
        decode_image(jpeg_with_markers(grey_jpeg, marker, FLOOD), MAX_BYTES, MAX_PIXELS, want_color=want_color)
    assert refused.value.status == 400


def test_stray_bytes_between_jpeg_markers_are_bounded_too(grey_jpeg, monkeypatch):
    """Pillow steps over bytes that are not a marker one at a time, in Python."""
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", _never("Pillow's JPEG header parser"))
    padded = grey_jpeg[:2] + b"\xff\xfe\x00\x02" + b"\x00" * 1_000_000 + grey_jpeg[2:]
    with pytest.raises(ImageError, match="markers before its image data"):
        decode_image(padded, MAX_BYTES, MAX_PIXELS)


def test_a_jpeg_with_generous_metadata_is_still_decoded_and_turned(face_frame):
    """EXIF, ICC, XMP and a few hundred comments: within the budget; the EXIF orientation still applies."""
    rotated = exif_rotated_jpeg(face_frame, 6)
    busy = jpeg_with_markers(rotated, b"\xff\xfe", 300)
    img = decode_image(busy, MAX_BYTES, MAX_PIXELS)
    assert (img.width, img.height) == (640, 480)
    icc = pil_bytes(Image.fromarray(face_frame[:, :, ::-1]), "JPEG", icc_profile=b"\0" * 200_000)  # 4 APP2 chunks
    assert decode_image(icc, MAX_BYTES, MAX_PIXELS).width == 640


def test_a_png_chunk_flood_is_refused_before_pillow_walks_it(monkeypatch):
    png = encode(np.full((48, 64, 3), 128, np.uint8), ".png")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "_open", _never("Pillow's PNG chunk parser"))
    with pytest.raises(ImageError, match="chunks") as refused:
        decode_image(png_with_chunks(png, FLOOD * 3), MAX_BYTES, MAX_PIXELS)
    assert refused.value.status == 400


def test_a_second_png_icc_profile_is_refused_before_pillow_inflates_it(monkeypatch):
    """Pillow inflates every iCCP chunk (1 MB from 1 KB); the PNG spec allows one, and one is still decoded."""
    png = encode(np.full((48, 64, 3), 128, np.uint8), ".png")
    profile = _chunk(b"iCCP", b"bomb\0\0" + BOMB)
    assert decode_image(png[:33] + profile + png[33:], MAX_BYTES, MAX_PIXELS).width == 64
    monkeypatch.setattr(PngImagePlugin.PngStream, "chunk_iCCP", _never("Pillow's iCCP inflater"))
    with pytest.raises(ImageError, match="more than 1 ICC profile .* chunks") as refused:
        decode_image(png[:33] + profile * 2 + png[33:], MAX_BYTES, MAX_PIXELS)
    assert refused.value.status == 400


@pytest.mark.parametrize("kind, body", [
    (b"zTXt", b"\0\0" + BOMB),  # no keyword: Pillow inflates it but leaves it out of its MAX_TEXT_MEMORY
    (b"iTXt", b"k\0\1\0\0\0" + BOMB),  # compressed international text
])
def test_compressed_png_chunks_are_refused_before_pillow_inflates_them(monkeypatch, kind, body):
    """40 KB of such chunks would have Pillow inflate 40 MB; a PNG's few compressed texts are still decoded."""
    png = encode(np.full((48, 64, 3), 128, np.uint8), ".png")
    assert decode_image(png_with_chunks_after_pixels(png, [_chunk(kind, body)] * 5), MAX_BYTES, MAX_PIXELS).width == 64
    monkeypatch.setattr(PngImagePlugin.PngStream, f"chunk_{kind.decode()}", _never("Pillow's text inflater"))
    with pytest.raises(ImageError, match="chunks that inflate to more than") as refused:
        decode_image(png_with_chunks_after_pixels(png, [_chunk(kind, body)] * 40), MAX_BYTES, MAX_PIXELS)
    assert refused.value.status == 400


def test_a_png_with_a_profile_and_compressed_metadata_is_still_decoded(face_frame):
    """What an editor writes: one ICC profile, compressed text, compressed XMP."""
    info = PngImagePlugin.PngInfo()
    for key in ("Raw profile type exif", "Raw profile type iptc", "Comment"):
        info.add_text(key, "0a" * 20_000, zip=True)
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta/>" * 2000, zip=True)
    png = pil_bytes(Image.fromarray(face_frame[:, :, ::-1]), "PNG", pnginfo=info, icc_profile=b"\0" * 200_000)
    assert decode_image(png, MAX_BYTES, MAX_PIXELS).width == 640


COSTLY_SEGMENTS = {  # what Pillow parses in Python, a little over each budget
    "DQT": (lambda jpeg: [_segment(b"\xff\xdb", (b"\0" + b"\1" * 64) * 130)], "quantization tables"),
    "SOF": (lambda jpeg: [_segment(b"\xff\xc0", _frame_header(jpeg) + b"\1\x11\0" * 700)], "frame headers"),
    "APP13": (lambda jpeg: [_segment(b"\xff\xed", b"Photoshop 3.0\0" + b"8BIM\4\4\0\0\0\0\0\0" * 5000)] * 9,
              "Photoshop data"),
    "Exif": (lambda jpeg: [_segment(b"\xff\xe1", b"Exif\0\0II*\0\x08\0\0\0\0\0\0\0\0\0")] * 3, "EXIF blocks"),
}


@pytest.mark.parametrize("kind", COSTLY_SEGMENTS)
def test_jpeg_segments_that_pillow_parses_in_python_are_bounded(grey_jpeg, monkeypatch, kind):
    """Within the marker budget, 10 MB of tables, frame headers or Photoshop data cost Pillow about a second."""
    make, what = COSTLY_SEGMENTS[kind]
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "_open", _never("Pillow's JPEG header parser"))
    with pytest.raises(ImageError, match=f"bytes of {what}|{what}") as refused:
        decode_image(jpeg_with_segments(grey_jpeg, make(grey_jpeg)), MAX_BYTES, MAX_PIXELS)
    assert refused.value.status == 400 and "markers" in str(refused.value)  # the page's plain wording keys on it


def test_a_phone_jpeg_with_all_its_metadata_is_still_decoded(face_frame):
    """EXIF, XMP and extended XMP, an ICC profile in 64 KB pieces, MPF, IPTC: counted apart, all within budget."""
    rotated = exif_rotated_jpeg(face_frame, 6)
    xmp = b"http://ns.adobe.com/xap/1.0/\0" + b"<x:xmpmeta/>" * 400
    extended = [b"http://ns.adobe.com/xmp/extension/\0" + b"0" * 32 + b"\0" * 8 + b"x" * 65000] * 4
    icc = [b"ICC_PROFILE\0" + bytes([i, 4]) + b"\0" * 60_000 for i in range(1, 5)]
    iptc = [b"Photoshop 3.0\0" + b"8BIM\4\4\0\0" + struct.pack(">I", 60_000) + b"\0" * 60_000] * 2
    entries = struct.pack(">IIIHH", 0x20030000, 0, 0, 0, 0) + struct.pack(">IIIHH", 0x00010001, 0, 0, 0, 0)
    mpf = b"MPF\0MM\0*" + struct.pack(">IH", 8, 3) + struct.pack(">HHI4s", 0xB000, 7, 4, b"0100") + struct.pack(
        ">HHII", 0xB001, 4, 1, 2) + struct.pack(">HHII", 0xB002, 7, len(entries), 50) + b"\0" * 4 + entries
    segments = ([_segment(b"\xff\xe1", xmp)] + [_segment(b"\xff\xe1", x) for x in extended]
                + [_segment(b"\xff\xe2", x) for x in icc + [mpf]] + [_segment(b"\xff\xed", x) for x in iptc])
    img = decode_image(rotated[:20] + b"".join(segments) + rotated[20:], MAX_BYTES, MAX_PIXELS)
    assert (img.width, img.height) == (640, 480)  # the EXIF orientation still applies


def test_a_png_in_many_small_idat_chunks_is_still_decoded():
    """libpng writes its pixels in chunks of 8 KB: a 10 MB PNG is about 1300 of them."""
    noise = np.random.default_rng(1).integers(0, 256, (1200, 1200, 3), np.uint8)
    png = encode(noise, ".png")
    assert len(png) > 4_000_000
    assert decode_image(png, MAX_BYTES, MAX_PIXELS).width == 1200


def eps(lines: int) -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n" + b"%%X\n" * lines + b"%%BoundingBox: 0 0 10 10\n"


def gif_with_extensions(blocks: int) -> bytes:
    gif = pil_bytes(Image.new("RGB", (8, 8), (200, 100, 50)), "GIF")
    start = gif.index(b"\x2c")  # the image descriptor, after the header and palette
    return gif[:start] + b"\x21\xfe\x01x\x00" * blocks + gif[start:]


OTHER_FORMATS = {
    "EPS": (lambda: eps(20_000), EpsImagePlugin.EpsImageFile),
    "PPM": (lambda: b"P6\n" + b"#\n" * 20_000 + b"8 8\n255\n" + b"\x80" * 192, PpmImagePlugin.PpmImageFile),
    "GIF": (lambda: gif_with_extensions(20_000), GifImagePlugin.GifImageFile),
}


@pytest.mark.parametrize("name", OTHER_FORMATS)
def test_other_formats_are_named_from_their_first_bytes_never_parsed(monkeypatch, name):
    make, plugin = OTHER_FORMATS[name]
    monkeypatch.setattr(plugin, "_open", _never(f"Pillow's {name} parser"))
    with pytest.raises(UnsupportedImage, match=f"unsupported image format {name}; send JPEG, PNG or WebP"):
        decode_image(make(), MAX_BYTES, MAX_PIXELS)


# -- the API and the page --------------------------------------------------------------------------

def send(app, data: bytes, url: str, filename: str = "photo.jpg"):
    """POST ``data`` as the form's ``image`` field, a JPEG by its name and type."""
    boundary = "costly"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return app.test_client().post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def test_a_marker_flood_gets_a_clear_400_from_the_api_and_the_page(app, grey_jpeg):
    flood = jpeg_with_markers(grey_jpeg, b"\xff\xfe", FLOOD)
    api = send(app, flood, "/api/v1/analyze")
    assert api.status_code == 400 and "markers before its image data" in api.json["error"]
    page = send(app, flood, "/upload")
    assert page.status_code == 400
    assert "not accepted (too much data before the picture): save it again" in page.get_data(as_text=True)


def test_the_page_names_a_refused_format_without_parsing_the_upload_again(app, monkeypatch):
    """Under eventlet a second parse on the request's greenlet stalled every other client."""
    monkeypatch.setattr(Image, "open", _never("Image.open"))
    resp = send(app, eps(20_000), "/upload", filename="cat.jpg")
    assert resp.status_code == 415
    assert "cat.jpg: EPS files are not supported: use a JPEG, PNG or WebP photo." in resp.get_data(as_text=True)


def test_the_page_message_reads_the_format_from_the_error_or_the_first_bytes(app, monkeypatch):
    monkeypatch.setattr(Image, "open", _never("Image.open"))
    with app.test_request_context("/upload", method="POST"):
        assert plain_message(UnsupportedImage("unsupported image format GIF"), b"GIF89a" + b"\0" * 64).startswith(
            "GIF files are not supported")
        assert plain_message(UnsupportedImage("unsupported"), b"\x00\x01").startswith("This kind of file is")


# -- 413: what was too much ------------------------------------------------------------------------

def test_too_many_form_fields_are_not_blamed_on_the_photo(app):
    fields = {f"f{i}": "x" for i in range(1500)}  # Flask's MAX_FORM_PARTS is 1000; the body is 100 KB or so
    page = post_multipart(app.test_client(), "/upload", fields, {})
    html = page.get_data(as_text=True)
    assert page.status_code == 413
    assert "This photo is" not in html and "too many fields" in html
    api = post_multipart(app.test_client(), "/api/v1/analyze", fields, {})
    assert api.status_code == 413 and api.is_json
    assert "the limit is" not in api.json["error"] and "1000 form fields" in api.json["error"]


def test_a_form_field_too_large_is_not_blamed_on_the_photo(app):
    fields = {"note": "x" * 600_000}  # Flask's MAX_FORM_MEMORY_SIZE is 500 kB; the photo may be 10 MB
    page = post_multipart(app.test_client(), "/upload", fields, {})
    html = page.get_data(as_text=True)
    assert page.status_code == 413
    assert "This photo is" not in html and "field that is too large" in html
    api = post_multipart(app.test_client(), "/api/v1/analyze", fields, {})
    assert api.status_code == 413 and "500000 bytes" in api.json["error"]


def test_a_body_over_the_limit_still_names_its_size(app):
    body = b"\0" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    api = app.test_client().post("/api/v1/analyze", data=body, content_type="image/jpeg")
    assert api.status_code == 413 and f"the limit is {app.config['MAX_UPLOAD_BYTES']} bytes" in api.json["error"]


def bmp_head() -> bytes:
    return pil_bytes(Image.new("RGB", (4, 4)), "BMP")[:32]


@pytest.mark.parametrize("head, name", [(b"P6 640 480 255\n", "PPM"), (b"P4\n", "PPM"), (b"P", None), (b"P1", None),
                                        (b"P9 ", None), (b"", None), (bmp_head(), "BMP"),
                                        (b"BMW owners' club: minutes of the meeting", None), (b"BM", None)])
def test_a_format_is_named_only_from_bytes_that_say_so(head, name):
    from app.vision.images import sniff_format

    assert sniff_format(head) == name

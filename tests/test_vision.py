"""The recogniser without Flask: decoding, detection, classification, tracking."""
from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

from app.vision.faces import DetectorSettings, FaceDetector
from app.vision.images import (
    MAX_JPEG_HEADER_MARKERS,
    MAX_JPEG_SCANS,
    ImageError,
    ImageTooLarge,
    UnsupportedImage,
    decode_image,
)
from app.vision.pipeline import STILL_SETTINGS, StreamAnalyzer, analyze_image
from app.vision.preprocess import EMOTIONS, TTA_VIEWS, ZOOM_CROP, prepare_face, tta_views
from app.vision.tracking import FaceTracker, iou
from tests.imagegen import encode, exif_rotated_jpeg, fer_collage, fit_frame, pil_bytes, png_bomb

MB = 1024 * 1024
# Hand-marked face centres (x, y) and approximate face widths in the original photos.
FACE_MARKS = {"obama.jpg": ((490, 243), 300), "biden.jpg": ((587, 368), 320), "astronaut.png": ((223, 113), 95)}


def decode(data, max_bytes=20 * MB, max_pixels=50_000_000, want_color=True):
    return decode_image(data, max_bytes, max_pixels, want_color)


@pytest.fixture(scope="module")
def model():
    """The served model: the int8 copy."""
    from app.extensions import load_model
    from tests.conftest import MODEL

    return load_model(str(MODEL), True)


@pytest.fixture(scope="module")
def float_model():
    """The served model's float source (``models/emotion.keras``)."""
    from app.extensions import load_model
    from tests.conftest import FLOAT_MODEL

    return load_model(str(FLOAT_MODEL), True)


@pytest.fixture(params=["model", "float_model"])
def any_model(request):
    """Each shipped model in turn: the served int8 copy, then its float source."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def photos(faces_dir):
    return {name: (faces_dir / name).read_bytes() for name in FACE_MARKS}


def contains(box, point) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


# --- preprocessing ---------------------------------------------------------

def test_prepare_face_shape_range_and_crop():
    gray = np.zeros((100, 200), np.uint8)
    gray[10:60, 20:70] = 255
    face = prepare_face(gray, (20, 10, 50, 50))
    assert face.shape == (48, 48, 1) and face.dtype == np.float32
    assert face.min() == pytest.approx(1.0) and face.max() == pytest.approx(1.0)
    whole = prepare_face(gray)
    assert 0.0 <= whole.min() < whole.max() <= 1.0


def test_prepare_face_refuses_box_outside_image():
    with pytest.raises(ValueError, match="outside"):
        prepare_face(np.zeros((50, 50), np.uint8), (60, 60, 10, 10))


def test_tta_views_zoom_each_face_and_mirror_it():
    rng = np.random.default_rng(3)
    faces = rng.random((3, 48, 48, 1), dtype=np.float32)
    views = tta_views(faces)
    assert len(views) == len(TTA_VIEWS) == 2
    assert all(v.shape == faces.shape and v.dtype == np.float32 for v in views)
    zoom, zoom_mirror = views
    np.testing.assert_array_equal(zoom_mirror, zoom[:, :, ::-1])
    assert 0.0 <= zoom.min() and zoom.max() <= 1.0 and not np.allclose(zoom, faces, atol=0.05)
    # A horizontal ramp zoomed in: still rising, its ends from inside the central crop.
    ramp = np.tile(np.linspace(0.0, 1.0, 48, dtype=np.float32), (48, 1))[None, :, :, None]
    zoomed = tta_views(ramp)[0][0, :, :, 0]
    margin = (48 - ZOOM_CROP) // 2
    assert np.all(np.diff(zoomed[24]) > 0)
    assert zoomed[24, 0] >= ramp[0, 0, margin, 0] - 1e-6 and zoomed[24, -1] <= ramp[0, 0, 47 - margin, 0] + 1e-6
    # ... and stretched: one output pixel spans ZOOM_CROP/48 of an input pixel.
    assert np.median(np.diff(zoomed[24])) == pytest.approx((1 / 47) * ZOOM_CROP / 48, rel=0.01)
    # Each face is zoomed on its own.
    np.testing.assert_allclose(tta_views(faces[1:2])[0], zoom[1:2])


def test_training_loader_uses_the_serving_preprocessing(tmp_path):
    from app.training.data import load_folder

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    for e in EMOTIONS:
        (tmp_path / e).mkdir()
        cv2.imwrite(str(tmp_path / e / "a.png"), img)
    split = load_folder(tmp_path)
    np.testing.assert_array_equal(split.x[0], prepare_face(img))


# --- decoding ----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_supported_formats(fmt):
    img = Image.new("RGB", (64, 40), (200, 30, 30))
    out = decode(pil_bytes(img, fmt))
    assert (out.width, out.height) == (64, 40)
    assert out.bgr.shape == (40, 64, 3) and out.gray.shape == (40, 64)


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "CMYK"])
def test_decode_odd_modes(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = Image.new(mode, (30, 20), {"L": 120, "RGBA": (10, 200, 10, 128), "I;16": 40000, "CMYK": (0, 255, 255, 0)}[mode])
    out = decode(pil_bytes(img, fmt))
    assert out.gray.dtype == np.uint8 and out.gray.shape == (20, 30)
    assert out.bgr.shape == (20, 30, 3)


def test_decode_applies_exif_orientation(photos):
    upright = cv2.imdecode(np.frombuffer(photos["astronaut.png"], np.uint8), cv2.IMREAD_COLOR)
    wide = cv2.resize(upright, (300, 200))
    out = decode(exif_rotated_jpeg(wide, 6))
    assert (out.width, out.height) == (300, 200)
    assert np.abs(out.bgr.astype(int) - wide.astype(int)).mean() < 12


@pytest.mark.parametrize("data, error, match", [
    (b"", ImageError, "empty"),
    (b"hello, I am not an image", ImageError, "not an image"),
    (b"GIF89a" + b"\x00" * 64, ImageError, "not an image|unsupported"),
])
def test_decode_refuses_garbage(data, error, match):
    with pytest.raises(error, match=match):
        decode(data)


def test_decode_refuses_gif_as_unsupported():
    with pytest.raises(UnsupportedImage):
        decode(pil_bytes(Image.new("RGB", (10, 10)), "GIF"))


def test_decode_refuses_truncated_jpeg(photos):
    data = photos["obama.jpg"]
    for want_color in (True, False):
        with pytest.raises(ImageError, match="corrupt|truncated"):
            decode(data[: len(data) // 2], want_color=want_color)


def test_decode_refuses_too_many_bytes():
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode(b"\xff" * 2000, max_bytes=1000)


def test_decompression_bomb_refused_from_header_alone(monkeypatch):
    bomb = png_bomb(30000, 30000)
    assert len(bomb) < 100_000
    # If anything tried to decode the pixels, this would fail the test.
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("bomb was decoded"))
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode(bomb)
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode(png_bomb(5000, 5000), max_pixels=1_000_000)


def many_scans_jpeg(scans: int) -> bytes:
    """A small progressive JPEG whose last scan is repeated until it has ``scans`` scans (each a pass to decode)."""
    rng = np.random.default_rng(3)
    data = pil_bytes(Image.fromarray(rng.integers(0, 255, (48, 64), np.uint8)), "JPEG", progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    extra = scans - data.count(b"\xff\xda")
    return data[:end] + data[last:end] * extra + data[end:]


@pytest.mark.parametrize("want_color", [True, False])  # the upload path (Pillow) and the live one (libjpeg to gray)
def test_decode_refuses_a_jpeg_of_too_many_scans(want_color):
    assert decode(many_scans_jpeg(MAX_JPEG_SCANS), want_color=want_color).gray.shape == (48, 64)
    with pytest.raises(ImageError, match=f"more than {MAX_JPEG_SCANS} scans") as refused:
        decode(many_scans_jpeg(MAX_JPEG_SCANS + 1), want_color=want_color)
    assert refused.value.status == 400


@pytest.mark.parametrize("want_color", [True, False])
def test_decode_counts_only_the_scans_of_the_image_not_a_motion_photos_appended_video(want_color):
    """A phone's "motion photo" is a JPEG followed by a video clip of several MB; that video's bytes hold an
    FF DA pair every 64 KB or so, which is no scan (decoding stops at the image's end, EOI)."""
    photo = many_scans_jpeg(10)
    video = bytearray(np.random.default_rng(5).integers(0, 256, 3_000_000, np.uint8).tobytes())
    for at in range(1000, len(video) - 2, 10_000):  # 300 of them, more than any appended clip's
        video[at:at + 2] = b"\xff\xda"
    out = decode(photo + b"ftypmp42" + bytes(video), want_color=want_color)
    assert (out.width, out.height) == (64, 48)


@pytest.mark.parametrize("want_color", [True, False])
def test_a_marker_like_pair_inside_a_segment_does_not_end_the_scan_count(want_color):
    """The scan count walks segments by their length: an FF D9 pair in a comment is no image end to stop at."""
    data = many_scans_jpeg(MAX_JPEG_SCANS + 1)
    comment = b"\xff\xfe\x00\x06\xff\xd9\xff\xd9"  # COM, length 6: two "EOI" pairs as its text
    with pytest.raises(ImageError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode(data[:2] + comment + data[2:], want_color=want_color)


@pytest.mark.parametrize("want_color", [True, False])
def test_an_image_end_before_any_scan_does_not_end_the_scan_count(want_color):
    """SOI EOI first (an empty, tables-only stream): the decoder reads on into the image that follows and decodes
    every one of its scans, so they are counted."""
    with pytest.raises(ImageError, match=f"more than {MAX_JPEG_SCANS} scans"):
        decode(b"\xff\xd8\xff\xd9" + many_scans_jpeg(MAX_JPEG_SCANS + 1), want_color=want_color)


@pytest.mark.parametrize("want_color", [True, False])
def test_decode_refuses_millions_of_empty_markers_inside_the_image_data(want_color):
    """Parameterless markers (TEM) after the first scan: walked one by one they would cost seconds; counted
    against the marker budget, the file is refused after a thousand."""
    data = many_scans_jpeg(2)
    end = data.rindex(b"\xff\xd9")
    with pytest.raises(ImageError, match=f"more than {MAX_JPEG_HEADER_MARKERS} markers") as refused:
        decode(data[:end] + b"\xff\x01" * 4_000_000 + data[end:], want_color=want_color)
    assert refused.value.status == 400


@pytest.mark.parametrize("want_color", [True, False])
def test_decode_takes_a_phones_multi_picture_jpeg_as_jpeg(want_color):
    photo = Image.new("RGB", (64, 40), (200, 30, 30))
    data = pil_bytes(photo, "MPO", save_all=True, append_images=[photo.resize((16, 10))])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    out = decode(data, want_color=want_color)
    assert out.format == "JPEG" and (out.width, out.height) == (64, 40)


def whole_image_bgr(img: Image.Image) -> np.ndarray:
    """An 8-bit image converted to BGR in one piece, transparent pixels onto white: what decoding must give."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return cv2.cvtColor(np.asarray(img.convert("RGB")), cv2.COLOR_RGB2BGR)


@pytest.mark.parametrize("rows", [1, 5, 1000])  # bands of one row, of five (the last one shorter), one band
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "P+transparency", "1", "CMYK"])
def test_decoding_in_bands_gives_the_whole_image_conversion(monkeypatch, mode, rows):
    from app.vision import images

    monkeypatch.setattr(images, "BAND_PIXELS", 61 * rows)
    rng = np.random.default_rng(5)
    noise = Image.fromarray(rng.integers(0, 256, (47, 61, 4), np.uint8), "RGBA")
    if mode.startswith("P"):
        img = noise.convert("RGB").quantize(32)
        data = pil_bytes(img, "PNG", **({"transparency": 3} if mode == "P+transparency" else {}))
        img = Image.open(io.BytesIO(data))
    else:
        img = noise.convert(mode)
        data = pil_bytes(img, "JPEG" if mode == "CMYK" else "PNG", **({"quality": 95} if mode == "CMYK" else {}))
        img = Image.open(io.BytesIO(data))
    expected = whole_image_bgr(img)
    out = decode(data)
    np.testing.assert_array_equal(out.bgr, expected)
    np.testing.assert_array_equal(out.gray, cv2.cvtColor(expected, cv2.COLOR_BGR2GRAY))
    if mode != "CMYK":  # a JPEG without colour asked goes to gray through libjpeg instead
        np.testing.assert_array_equal(decode(data, want_color=False).gray, out.gray)


@pytest.mark.parametrize("peak", [300, 40000])  # scaled from 0-65535 when a value is above 255, else from 0-255
def test_sixteen_bit_gray_is_scaled_in_bands_as_in_one_piece(monkeypatch, peak):
    from app.vision import images

    monkeypatch.setattr(images, "BAND_PIXELS", 61 * 5)
    arr = np.random.default_rng(6).integers(0, peak, (47, 61)).astype(np.uint16)
    top = 65535.0 if arr.max() > 255 else 255.0
    expected = np.clip(arr.astype(np.float64) / top * 255.0, 0, 255).astype(np.uint8)
    out = decode(pil_bytes(Image.fromarray(arr), "PNG"))
    np.testing.assert_array_equal(out.gray, expected)
    np.testing.assert_array_equal(out.bgr, cv2.cvtColor(expected, cv2.COLOR_GRAY2BGR))


@pytest.mark.parametrize("want_color", [True, False])
def test_decoding_a_large_photo_makes_no_full_size_copy_beside_its_results(want_color):
    """Beside Pillow's own image (not seen by tracemalloc), only the results are ever whole-size.

    Converted in one piece, a 12-megapixel photo took 25 MB more (57 MB for gray alone): a converted copy and
    BGR beside gray; in bands of a megapixel, 2 and 6 MB.
    """
    img = np.full((3000, 4000, 3), (120, 150, 180), np.uint8)
    cv2.circle(img, (2000, 1500), 1000, (200, 90, 40), -1)
    data = encode(img, ".png")
    tracemalloc.start()
    try:
        out = decode(data, want_color=want_color)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    results = out.gray.nbytes + (out.bgr.nbytes if want_color else 0)
    assert peak < results + 12 * MB, f"{peak / MB:.0f} MiB at peak for {results / MB:.0f} MiB of results"


# --- detection ---------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FACE_MARKS))
def test_each_photo_has_exactly_one_face_on_it(name, photos, model):
    image = decode(photos[name])
    result = analyze_image(image, model)
    assert len(result["faces"]) == 1, result["faces"]
    box = result["faces"][0]["box"]
    centre, width = FACE_MARKS[name]
    assert contains(box, centre)
    assert 0.6 * width <= box[2] <= 1.5 * width
    face = result["faces"][0]
    assert set(face["scores"]) == set(EMOTIONS) and face["label"] in EMOTIONS
    assert sum(face["scores"].values()) == pytest.approx(1.0, abs=2e-3)


def test_scores_pair_each_probability_with_its_own_emotion(model):
    row = np.arange(1, len(EMOTIONS) + 1, dtype=np.float32) / 100  # all different
    assert model.scores(row) == {e: pytest.approx((i + 1) / 100) for i, e in enumerate(EMOTIONS)}
    assert list(model.scores(row)) == list(EMOTIONS)


@pytest.mark.parametrize("name", sorted(FACE_MARKS))
def test_live_detector_finds_the_face_in_a_webcam_sized_frame(name, photos):
    frame = fit_frame(cv2.imdecode(np.frombuffer(photos[name], np.uint8), cv2.IMREAD_COLOR))
    boxes = FaceDetector().detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    assert len(boxes) == 1


def test_collage_of_fer_faces_all_found(fer_dir, model):
    frame, placed = fer_collage(fer_dir, n=6)
    assert len(placed) == 6
    for settings in (DetectorSettings(), STILL_SETTINGS):
        boxes = FaceDetector(settings).detect(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
        for truth, label in placed:
            assert max((iou(truth, b) for b in boxes), default=0) > 0.4, (settings, truth, label, boxes)
        assert len(boxes) == len(placed)
    result = analyze_image(decode(encode(frame, ".png")), model)
    assert len(result["faces"]) == 6


@pytest.mark.parametrize("size", [(4000, 3), (3, 4000), (2000, 20)])
@pytest.mark.parametrize("settings", [DetectorSettings(), STILL_SETTINGS], ids=["live", "still"])
def test_a_strip_thinner_than_a_face_has_no_face(size, settings):
    assert FaceDetector(settings).detect(np.full(size[::-1], 128, np.uint8)) == []


def test_a_small_face_in_a_large_photo_is_found(photos, model):
    """A still is scanned at full size up to 1 megapixel, a larger one at 1 megapixel: a 60-pixel face in a
    1600x1200 photo is found (the 640-pixel-wide copy scanned before shrank it below the cascade's window)."""
    face = Image.open(io.BytesIO(photos["obama.jpg"])).convert("RGB")  # the face is about 311 px wide
    k = 60 / 311
    canvas = Image.new("RGB", (1600, 1200), (120, 120, 120))
    canvas.paste(face.resize((round(face.width * k), round(face.height * k)), Image.LANCZOS), (900, 700))
    result = analyze_image(decode(pil_bytes(canvas, "PNG")), model)
    (found,) = result["faces"]
    (cx, cy), _ = FACE_MARKS["obama.jpg"]
    assert contains(found["box"], (900 + cx * k, 700 + cy * k))
    assert 45 <= found["box"][2] <= 80
    assert STILL_SETTINGS.smallest_face(1000, 1000) == 40 and STILL_SETTINGS.smallest_face(1600, 1200) <= 60
    assert 130 <= STILL_SETTINGS.smallest_face(4032, 3024) <= 150


def test_local_redetection_follows_a_moving_face(photos):
    base = fit_frame(cv2.imdecode(np.frombuffer(photos["obama.jpg"], np.uint8), cv2.IMREAD_COLOR))
    detector = FaceDetector()
    gray = cv2.cvtColor(base, cv2.COLOR_BGR2GRAY)
    (box,) = detector.detect(gray)
    for dx in (6, 12, 18):
        shifted = np.roll(gray, dx, axis=1)
        (near,) = detector.detect_near(shifted, [box])
        assert near is not None and iou(near, (box[0] + dx, *box[1:])) > 0.6
        box = near
    assert detector.detect_near(np.full_like(gray, 90), [box]) == [None]


def test_detectors_are_lent_not_reloaded_per_thread(photos, model, monkeypatch):
    """A stream analysed on a fresh thread per frame loads its cascade once, and no detector runs in two threads."""
    import threading

    from app.vision import pipeline

    loaded, in_use, overlaps = [], set(), []

    class Counting(FaceDetector):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaded.append(self)

        def detect(self, gray):
            if self in in_use:
                overlaps.append(self)
            in_use.add(self)
            try:
                return super().detect(gray)
            finally:
                in_use.discard(self)

    monkeypatch.setattr(pipeline, "FaceDetector", Counting)
    monkeypatch.setattr(pipeline, "detectors", pipeline.DetectorPool())
    frame = encode(fit_frame(cv2.imdecode(np.frombuffer(photos["obama.jpg"], np.uint8), cv2.IMREAD_COLOR)), ".jpg")
    stream = StreamAnalyzer(model, max_bytes=10**7, max_pixels=10**7, full_scan_every=1)
    for _ in range(4):  # one frame per thread, one after another: as a live stream that is idle between frames
        t = threading.Thread(target=stream.process, args=(frame,))
        t.start()
        t.join()
    assert len(loaded) == 1
    streams = [StreamAnalyzer(model, max_bytes=10**7, max_pixels=10**7, full_scan_every=1) for _ in range(4)]
    threads = [threading.Thread(target=lambda s=s: [s.process(frame) for _ in range(3)]) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == [] and 1 <= len(loaded) <= len(threads)


# --- tracking and streams --------------------------------------------------------

def test_tracker_keeps_ids_and_smooths():
    t = FaceTracker(smoothing=0.5, max_missed=1)
    a = np.eye(7, dtype=np.float32)[3]
    b = np.eye(7, dtype=np.float32)[0]
    (first,) = t.update([(10, 10, 50, 50)], a[None])
    (again,) = t.update([(14, 12, 50, 50)], b[None])
    assert again.id == first.id
    np.testing.assert_allclose(again.probs, 0.5 * a + 0.5 * b)
    one, two = t.update([(16, 12, 50, 50), (300, 300, 60, 60)], np.stack([b, a]))
    assert one.id == first.id and two.id != first.id
    t.update([], np.zeros((0, 7)))
    t.update([], np.zeros((0, 7)))
    assert t.tracks == []


def test_stream_analyzer_gives_stable_ids_and_timings(photos, model):
    base = fit_frame(cv2.imdecode(np.frombuffer(photos["obama.jpg"], np.uint8), cv2.IMREAD_COLOR))
    stream = StreamAnalyzer(model, max_bytes=MB, max_pixels=2_000_000, full_scan_every=4)
    ids = set()
    for dx in range(0, 40, 4):
        result = stream.process(encode(np.roll(base, dx, axis=1)))
        assert len(result["faces"]) == 1
        ids.add(result["faces"][0]["id"])
        assert set(result["timings_ms"]) == {"decode", "detect", "classify", "total"}
    assert ids == {1}


def test_stream_analyzer_bad_frame_leaves_state_unchanged(photos, model):
    stream = StreamAnalyzer(model, max_bytes=MB, max_pixels=2_000_000)
    frame = encode(fit_frame(cv2.imdecode(np.frombuffer(photos["obama.jpg"], np.uint8), cv2.IMREAD_COLOR)))
    stream.process(frame)
    before = [(t.id, t.box) for t in stream.tracker.tracks]
    with pytest.raises(ImageError):
        stream.process(b"garbage")
    assert [(t.id, t.box) for t in stream.tracker.tracks] == before
    assert stream.process(frame)["faces"][0]["id"] == before[0][0]


def test_model_batches_match_single_predictions(any_model):
    rng = np.random.default_rng(1)
    faces = rng.random((5, 48, 48, 1), dtype=np.float32)
    batch = any_model.predict(faces)
    singles = np.concatenate([any_model.predict(f[None]) for f in faces])
    np.testing.assert_allclose(batch, singles, atol=1e-4)
    assert any_model.predict(np.zeros((0, 48, 48, 1), np.float32)).shape == (0, 7)
    many = any_model.predict(rng.random((40, 48, 48, 1), dtype=np.float32))
    assert many.shape == (40, 7)
    np.testing.assert_allclose(many.sum(axis=1), 1.0, atol=1e-5)


def test_served_probabilities_are_the_mean_over_the_tta_views(any_model):
    from app.vision.emotions import EmotionModel

    if any_model.backend == "tflite":
        plain = EmotionModel.load(any_model.path, tta=False)
    else:
        plain = EmotionModel(any_model.keras_model, tta=False)
    faces = np.random.default_rng(4).random((3, 48, 48, 1), dtype=np.float32)
    expected = np.mean([plain.predict(view) for view in tta_views(faces)], axis=0)
    np.testing.assert_allclose(any_model.predict(faces), expected, atol=1e-5)
    np.testing.assert_allclose(any_model.predict(faces).sum(axis=1), 1.0, atol=1e-5)


def test_the_server_serves_the_int8_copy_of_the_float_model(model, float_model):
    from app.config import Config
    from tests.conftest import FLOAT_MODEL, MODEL

    assert Config.MODEL_PATH == str(MODEL) and model.backend == "tflite" and float_model.backend == "tensorflow"
    card = json.loads(MODEL.with_suffix(".json").read_text())
    assert card["quantization"]["source"]["sha256"] == hashlib.sha256(FLOAT_MODEL.read_bytes()).hexdigest(), \
        f"{MODEL.name} was made from another {FLOAT_MODEL.name}: run python -m app.training.quantize"


def test_int8_copy_follows_its_float_source_on_real_faces(model, float_model, fer_dir):
    from app.training.data import load_folder, stratified_sample

    faces = stratified_sample(load_folder(fer_dir / "test"), 300, seed=7).x
    served, source = model.predict(faces), float_model.predict(faces)
    assert (served.argmax(1) == source.argmax(1)).mean() >= 0.95
    assert np.abs(served - source).mean() <= 0.01
    assert not np.array_equal(served, source)  # it is a different runtime, not the float model again


def test_int8_copy_answers_threads_at_once_as_it_answers_one(model):
    faces = np.random.default_rng(8).random((8, 1, 48, 48, 1), dtype=np.float32)
    alone = [model.predict(f) for f in faces]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(model.predict, [f for f in faces for _ in range(4)]))
    for i, probs in enumerate(together):
        np.testing.assert_array_equal(probs, alone[i // 4])


def test_a_model_file_that_is_not_a_usable_tflite_is_refused_with_a_reason(tmp_path):
    import keras
    import tensorflow as tf

    from app.vision.emotions import EmotionModel, ModelLoadError

    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelLoadError, match="garbage.tflite is unreadable"):
        EmotionModel.load(garbage)
    inp = keras.Input((32, 32, 1))
    small = keras.Model(inp, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inp)))
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(tf.lite.TFLiteConverter.from_keras_model(small).convert())
    with pytest.raises(ModelLoadError, match=r"takes \(32, 32, 1\).*expected \(48, 48, 1\)"):
        EmotionModel.load(wrong)


def test_served_graphs_are_frozen_and_give_the_keras_models_output(float_model):
    from app.vision.emotions import EmotionModel

    plain = EmotionModel(float_model.keras_model, tta=False)
    assert all(not fn.graph.variables for fn in plain._fns.values())  # weights baked in as constants
    faces = np.random.default_rng(5).random((3, 48, 48, 1), dtype=np.float32)
    expected = np.asarray(float_model.keras_model(faces, training=False))
    np.testing.assert_allclose(plain.predict(faces), expected, atol=1e-5)


def test_a_prediction_binds_its_input_without_formatting_it(float_model, monkeypatch):
    """The hot path never builds a binding-error text (it formats the whole input tensor, ~2 ms holding the GIL)."""
    from tensorflow.python.framework import ops

    formatted = []
    original = ops._EagerTensorBase.__repr__
    monkeypatch.setattr(ops._EagerTensorBase, "__repr__", lambda t: formatted.append(t.shape) or original(t))
    float_model.predict(np.random.default_rng(6).random((2, 48, 48, 1), dtype=np.float32))
    assert formatted == []

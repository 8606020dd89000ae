"""FER-2013 loaders (folder and CSV forms), checksums, validation carving and sampling."""
from __future__ import annotations

import hashlib
import re
import shutil

import cv2
import numpy as np
import pytest

from app.training.data import DataError, Split, carve_validation, load_csv, load_dataset, load_folder, stratified_sample
from app.vision.preprocess import EMOTIONS
from tests.conftest import FER, require
from tests.fersynth import csv_rows, synthetic_face, write_class_folders, write_csv, write_tree


def readme_checksum(root) -> str:
    """The data set README's recipe, written out independently of app.training.data."""
    lines = sorted(
        f"{p.parent.name}/{p.name}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in root.glob("*/*") if p.is_file()
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@pytest.fixture
def folder(tmp_path):
    return write_class_folders(tmp_path / "split", per_class=3, seed=0)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("fer"), train_per_class=12, test_per_class=4)


def test_folder_loads_png_and_jpg_as_prepared_faces(tmp_path):
    root = write_class_folders(tmp_path / "mixed", per_class=2, seed=0, ext=".png")
    write_class_folders(root, per_class=1, seed=1, prefix="photo", ext=".jpg")
    big = cv2.resize(synthetic_face(3, np.random.default_rng(2)), (96, 96))
    cv2.imwrite(str(root / "happy" / "big.JPG"), big)
    (root / "happy" / "notes.txt").write_text("not an image; ignored")

    split = load_folder(root)

    assert split.x.shape == (7 * 3 + 1, 48, 48, 1) and split.x.dtype == np.float32
    assert 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert np.bincount(split.y).tolist() == [3, 3, 3, 4, 3, 3, 3]
    assert "happy/big.JPG" in split.names and "angry/img_0.png" in split.names
    png = cv2.imread(str(root / "angry" / "img_0.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(np.rint(split.x[split.names.index("angry/img_0.png"), :, :, 0] * 255), png)


def test_folder_checksum_follows_the_readme_recipe_and_is_stable(folder):
    first, second = load_folder(folder), load_folder(folder)
    assert first.checksum == second.checksum == readme_checksum(folder)
    (folder / "sad" / "img_0.png").write_bytes((folder / "sad" / "img_1.png").read_bytes())
    assert load_folder(folder).checksum != first.checksum


def test_real_fer2013_test_checksum_matches_its_readme():
    test_dir = require(FER / "test")
    published = re.search(r"test:\s+`([0-9a-f]{64})`", (FER / "README.md").read_text()).group(1)
    assert load_folder(test_dir).checksum == published


def _missing_root(root):
    return root / "nope"


def _empty_class(root):
    for f in (root / "disgust").iterdir():
        f.unlink()


def _missing_class(root):
    shutil.rmtree(root / "fear")


def _unknown_class(root):
    (root / "contempt").mkdir()


def _unreadable(root):
    (root / "sad" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def _empty_file(root):
    (root / "sad" / "zero.png").write_bytes(b"")


@pytest.mark.parametrize("damage, message", [
    (_missing_root, "data folder not found"),
    (_empty_file, "zero.png: empty file, not an image"),
    (_empty_class, "disgust: class folder holds no .png/.jpg images"),
    (_missing_class, "missing class folder(s) ['fear']"),
    (_unknown_class, "unexpected class folder(s) ['contempt']"),
    (_unreadable, "broken.png: not a readable image"),
])
def test_folder_errors_say_what_is_wrong(folder, damage, message):
    target = damage(folder) or folder
    with pytest.raises(DataError) as err:
        load_folder(target)
    assert message in str(err.value)


def test_csv_loads_splits_by_usage(tmp_path):
    rows = csv_rows({"Training": 3, "PublicTest": 2, "PrivateTest": 1})
    path = write_csv(tmp_path / "fer2013.csv", rows)

    splits = load_csv(path)

    assert sorted(splits) == ["PrivateTest", "PublicTest", "Training"]
    train = splits["Training"]
    assert train.x.shape == (21, 48, 48, 1) and train.x.dtype == np.float32
    assert np.bincount(train.y).tolist() == [3] * 7
    first = np.array(rows[0]["pixels"].split(), np.uint8).reshape(48, 48)
    assert np.array_equal(np.rint(train.x[0, :, :, 0] * 255), first)
    assert train.names[0] == "Training/2"  # file line of the first data row
    assert load_csv(path)["Training"].checksum == train.checksum
    tr, val = load_dataset(path)
    assert len(tr) == 21 and len(val) == 14


def _row(**change):
    return {**csv_rows({"Training": 1})[0], **change}


@pytest.mark.parametrize("bad_row, message", [
    (_row(pixels="0 " * 2303), "pixels must be 2304 values"),
    (_row(pixels="12 x " * 1152), "malformed row"),
    (_row(pixels="256 " * 2304), "values in 0..255, got values from 256 to 256"),
    (_row(pixels="nan " * 2304), "got 2304 non-numbers"),
    (_row(pixels="7 inf " * 1152), "got values from 7 to 7 and 1152 non-numbers"),
    (_row(emotion="happy"), "malformed row"),
    (_row(emotion="7"), "emotion 7 outside 0..6"),
    (_row(emotion="-1"), "emotion -1 outside 0..6"),
    (_row(Usage=""), "empty Usage"),
])
def test_csv_malformed_row_is_reported_with_its_line(tmp_path, bad_row, message):
    path = write_csv(tmp_path / "fer2013.csv", [*csv_rows({"Training": 1})[:2], bad_row])
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert f"{path}:4:" in str(err.value) and message in str(err.value)


def test_csv_short_row_is_reported_with_its_line(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv", csv_rows({"Training": 1})[:2])
    with path.open("a") as fh:
        fh.write("3\n")  # a row cut short: no pixels, no Usage
    with pytest.raises(DataError) as err:
        load_csv(path)
    assert f"{path}:4: malformed row: expected the columns emotion,pixels,Usage, found 1 value(s)" in str(err.value)


def test_a_file_that_is_not_text_is_not_a_csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    path.write_bytes(b"emotion,pixels,Usage\n0,\xff\xfe,Training\n")
    with pytest.raises(DataError, match="not a UTF-8 text CSV"):
        load_csv(path)


@pytest.mark.parametrize("fieldnames", [("emotion", "pixels"), ("label", "pixels", "Usage")])
def test_csv_missing_columns(tmp_path, fieldnames):
    path = write_csv(tmp_path / "fer2013.csv", csv_rows({"Training": 1}), fieldnames)
    with pytest.raises(DataError, match="expected columns emotion,pixels,Usage"):
        load_csv(path)


def test_csv_without_rows_or_training_split(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        load_csv(write_csv(tmp_path / "empty.csv", []))
    with pytest.raises(DataError, match="no rows with Usage=Training"):
        load_dataset(write_csv(tmp_path / "test-only.csv", csv_rows({"PublicTest": 1})))
    with pytest.raises(DataError, match="CSV file not found"):
        load_csv(tmp_path / "missing.csv")


def test_load_dataset_forms(tree, tmp_path):
    train, val = load_dataset(tree)
    assert (len(train), len(val)) == (7 * 12, 7 * 4 + 1)
    assert val.checksum == load_folder(tree / "test").checksum

    only_train, none = load_dataset(tree / "train")
    assert none is None and only_train.checksum == train.checksum

    carved_train, carved_val = load_dataset(tree, val_split=0.25, seed=3)
    assert len(carved_train) + len(carved_val) == len(train)  # PublicTest is replaced, not added
    with pytest.raises(DataError, match="data not found"):
        load_dataset(tmp_path / "nowhere")


def test_carve_validation_is_stratified_disjoint_and_seeded(tree):
    full = load_folder(tree / "train")
    uneven = Split(full.x[6:], full.y[6:], full.names[6:], full.checksum)  # angry: 6 images, others 12

    train, val = carve_validation(uneven, 0.25, seed=1)

    assert np.bincount(val.y).tolist() == [2, 3, 3, 3, 3, 3, 3]  # round(6 * .25) = 2, 12 * .25 = 3
    assert sorted(train.names + val.names) == sorted(uneven.names)
    assert not set(train.names) & set(val.names)
    assert carve_validation(uneven, 0.25, seed=1)[1].names == val.names
    assert carve_validation(uneven, 0.25, seed=2)[1].names != val.names


def test_stratified_sample_is_fixed_proportional_and_order_free(tree):
    full = load_folder(tree / "train")
    uneven = Split(full.x[6:], full.y[6:], full.names[6:], full.checksum)

    sample = stratified_sample(uneven, 26, seed=7)

    assert len(sample) == 26
    share = np.bincount(uneven.y) * 26 / len(uneven)
    assert np.all(np.abs(np.bincount(sample.y, minlength=7) - share) < 1)
    shuffled = np.random.default_rng(0).permutation(len(uneven))
    reordered = Split(uneven.x[shuffled], uneven.y[shuffled], [uneven.names[i] for i in shuffled])
    again = stratified_sample(reordered, 26, seed=7)
    assert sorted(again.names) == sorted(sample.names) and again.checksum == sample.checksum
    assert stratified_sample(uneven, 26, seed=8).checksum != sample.checksum
    for name, x in zip(sample.names, sample.x, strict=True):
        assert np.array_equal(x, uneven.x[uneven.names.index(name)])
    assert len(stratified_sample(uneven, 10_000, seed=7)) == len(uneven)


def test_labels_follow_the_fer2013_order():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

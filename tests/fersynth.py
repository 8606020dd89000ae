"""Tiny FER-2013-shaped data sets made on the fly, in both published forms."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from app.vision.preprocess import EMOTIONS, INPUT_SIZE


def synthetic_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 48x48 uint8 image whose bright band's row depends on ``label`` (so it is learnable)."""
    img = rng.integers(0, 70, (INPUT_SIZE, INPUT_SIZE)).astype(np.int32)
    top = 3 + 6 * label + int(rng.integers(-1, 2))
    img[top:top + 5, 4:44] += 150
    return np.clip(img, 0, 255).astype(np.uint8)


def write_class_folders(root: Path, per_class: int, seed: int, prefix: str = "img", ext: str = ".png") -> Path:
    """Write ``root/<emotion>/<prefix>_<i><ext>`` for every emotion; returns ``root``."""
    rng = np.random.default_rng(seed)
    for label, emotion in enumerate(EMOTIONS):
        folder = root / emotion
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ok = cv2.imwrite(str(folder / f"{prefix}_{i}{ext}"), synthetic_face(label, rng))
            assert ok
    return root


def write_tree(root: Path, train_per_class: int = 40, test_per_class: int = 10, seed: int = 0) -> Path:
    """``root/train`` and ``root/test`` (PublicTest) with one test image copied from train."""
    write_class_folders(root / "train", train_per_class, seed, "Training")
    write_class_folders(root / "test", test_per_class, seed + 1, "PublicTest")
    # A pixel-identical train/test pair, as FER-2013 has (the model card must find it).
    original = root / "train" / "angry" / "Training_0.png"
    (root / "test" / "angry" / "PublicTest_dup.png").write_bytes(original.read_bytes())
    return root


def csv_rows(counts: dict[str, int], seed: int = 0) -> list[dict[str, str]]:
    """Kaggle-format rows (emotion, pixels, Usage): ``counts[usage]`` images per emotion."""
    rng = np.random.default_rng(seed)
    rows = []
    for usage, per_class in counts.items():
        for label in range(len(EMOTIONS)):
            for _ in range(per_class):
                pixels = " ".join(str(v) for v in synthetic_face(label, rng).ravel())
                rows.append({"emotion": str(label), "pixels": pixels, "Usage": usage})
    return rows


def write_csv(path: Path, rows: list[dict[str, str]], fieldnames=("emotion", "pixels", "Usage")) -> Path:
    """Write rows as a CSV file with the given header."""
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def is_png(path: Path, min_bytes: int = 5000) -> bool:
    """True for a real PNG file of at least ``min_bytes``."""
    data = Path(path).read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= min_bytes

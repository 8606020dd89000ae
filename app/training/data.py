"""Load FER-2013 in either published form: an image-folder tree or the Kaggle CSV.

Folder form: ``<root>/<emotion>/*.png|jpg`` for one split, or ``<root>/train``
and ``<root>/test`` (PublicTest) side by side. CSV form: ``fer2013.csv`` with
the columns ``emotion,pixels,Usage``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.vision.preprocess import EMOTIONS, INPUT_SIZE, prepare_face

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class DataError(ValueError):
    """The data set is missing, empty or malformed; the message says where."""


def read_record(path: Path) -> dict:
    """A JSON object from ``path`` (a model card, a run state); a DataError when the file holds anything else."""
    try:
        record = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} holds a JSON {type(record).__name__}, not a record")
    return record


def check_output(path: str | Path, flag: str, folder: bool = False) -> None:
    """Before the long work that ends in writing ``path`` (a file; with ``folder``, a folder to write in): make
    its folder and write a scratch file there. A DataError naming ``flag`` when that cannot be done."""
    path = Path(path)
    where = path if folder else path.parent
    if not folder and path.is_dir():
        raise DataError(f"{flag} {path} is a folder; give the path of a file")
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as exc:
        raise DataError(f"{flag} {path}: cannot write in {where} ({exc.strerror or exc})") from None


@dataclass
class Split:
    """One split: images (N, 48, 48, 1) float32 in [0, 1], labels (N,) int."""

    x: np.ndarray
    y: np.ndarray
    names: list[str] = field(default_factory=list)
    checksum: str = ""

    def __len__(self) -> int:
        return len(self.y)


def _hash_listing(lines: list[str]) -> str:
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode())
    return digest.hexdigest()


def load_folder(root: str | Path) -> Split:
    """Load one split laid out as ``root/<emotion>/<image>``.

    The checksum is SHA-256 over ``<emotion>/<file>\\t<sha256>\\n`` lines sorted
    by path, the same recipe the data set's README publishes.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    found = {p.name for p in root.iterdir() if p.is_dir()}
    unknown = found - set(EMOTIONS)
    if unknown:
        raise DataError(f"{root}: unexpected class folder(s) {sorted(unknown)}; expected {list(EMOTIONS)}")
    missing = [e for e in EMOTIONS if e not in found]
    if missing:
        raise DataError(f"{root}: missing class folder(s) {missing}; expected one per emotion {list(EMOTIONS)}")
    images, labels, names, lines = [], [], [], []
    for label, emotion in enumerate(EMOTIONS):
        files = sorted(p for p in (root / emotion).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{root / emotion}: class folder holds no .png/.jpg images")
        for path in files:
            raw = path.read_bytes()
            if not raw:
                raise DataError(f"{path}: empty file, not an image")
            img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(f"{path}: not a readable image")
            images.append(prepare_face(img))
            labels.append(label)
            names.append(f"{emotion}/{path.name}")
            lines.append(f"{emotion}/{path.name}\t{hashlib.sha256(raw).hexdigest()}\n")
    return Split(np.stack(images), np.asarray(labels, np.int64), names, _hash_listing(lines))


def load_csv(path: str | Path) -> dict[str, Split]:
    """Load the Kaggle ``fer2013.csv``; returns splits keyed by Usage value."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    rows: dict[str, tuple[list, list, list]] = {}
    digest = hashlib.sha256()
    with path.open(newline="") as fh:
        try:
            _read_csv_rows(path, fh, rows, digest)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise DataError(f"{path}: unreadable CSV ({exc})") from None
    if not rows:
        raise DataError(f"{path}: no data rows")
    checksum = digest.hexdigest()
    return {u: Split(np.stack(x), np.asarray(y, np.int64), n, checksum) for u, (x, y, n) in rows.items()}


def _read_csv_rows(path: Path, fh, rows: dict[str, tuple[list, list, list]], digest) -> None:
    """``load_csv``'s rows: each face prepared into ``rows[usage]``, each row hashed into ``digest``."""
    reader = csv.DictReader(fh)
    need = {"emotion", "pixels", "Usage"}
    if reader.fieldnames is None or not need <= set(reader.fieldnames):
        raise DataError(f"{path}: expected columns emotion,pixels,Usage; found {reader.fieldnames}")
    n_pixels = INPUT_SIZE * INPUT_SIZE
    for lineno, row in enumerate(reader, start=2):
        if any(row[k] is None for k in need):  # DictReader fills the fields a short row lacks with None
            raise DataError(f"{path}:{lineno}: malformed row: expected the columns emotion,pixels,Usage, "
                            f"found {sum(v is not None for v in row.values())} value(s)")
        try:
            label = int(row["emotion"])
            pixels = np.array(row["pixels"].split(), dtype=np.float32)
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: malformed row ({exc})") from None
        if not 0 <= label < len(EMOTIONS):
            raise DataError(f"{path}:{lineno}: emotion {label} outside 0..{len(EMOTIONS) - 1}")
        if pixels.size != n_pixels:
            raise DataError(f"{path}:{lineno}: pixels must be {n_pixels} values in 0..255, got {pixels.size} values")
        finite = pixels[np.isfinite(pixels)]
        if finite.size < n_pixels or finite.min() < 0 or finite.max() > 255:
            found = [f"values from {finite.min():g} to {finite.max():g}"] if finite.size else []
            found += [f"{n_pixels - finite.size} non-numbers"] if finite.size < n_pixels else []
            raise DataError(f"{path}:{lineno}: pixels must be {n_pixels} values in 0..255, got {' and '.join(found)}")
        usage = row["Usage"].strip()
        if not usage:
            raise DataError(f"{path}:{lineno}: empty Usage")
        xs, ys, names = rows.setdefault(usage, ([], [], []))
        xs.append(prepare_face(pixels.reshape(INPUT_SIZE, INPUT_SIZE).astype(np.uint8)))
        ys.append(label)
        names.append(f"{usage}/{lineno}")
        digest.update(f"{label},{row['pixels']},{usage}\n".encode())


def load_dataset(data: str | Path, val_split: float = 0.0, seed: int = 0) -> tuple[Split, Split | None]:
    """Return (train, validation) from a folder tree or a CSV file.

    Validation is PublicTest where the data has it (``test/`` folder or
    ``PublicTest`` rows); otherwise, or when ``val_split`` > 0, a stratified
    fraction carved from train. ``None`` when there is neither.
    """
    data = Path(data)
    if not data.exists():
        raise DataError(f"data not found: {data}")
    val = None
    if data.is_file():
        splits = load_csv(data)
        if "Training" not in splits:
            raise DataError(f"{data}: no rows with Usage=Training")
        train, val = splits["Training"], splits.get("PublicTest")
    elif (data / "train").is_dir():
        train = load_folder(data / "train")
        if (data / "test").is_dir():
            val = load_folder(data / "test")
    else:
        train = load_folder(data)
    if val_split > 0:
        train, val = carve_validation(train, val_split, seed)
    return train, val


def carve_validation(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split off a stratified ``fraction`` of ``split`` as validation."""
    rng = np.random.default_rng(seed)
    val_idx = []
    for label in np.unique(split.y):
        idx = np.flatnonzero(split.y == label)
        rng.shuffle(idx)
        val_idx.extend(idx[: max(1, int(round(len(idx) * fraction)))])
    mask = np.zeros(len(split), bool)
    mask[val_idx] = True
    names = np.asarray(split.names or [""] * len(split), dtype=object)
    train = Split(split.x[~mask], split.y[~mask], list(names[~mask]), split.checksum)
    val = Split(split.x[mask], split.y[mask], list(names[mask]), split.checksum)
    return train, val


def stratified_sample(split: Split, n: int, seed: int) -> Split:
    """A fixed sample of ``n`` images (all when fewer) keeping each class's share.

    Images are ranked by a seeded hash of their names, not by a random stream,
    so the same data, ``n`` and ``seed`` give the same sample on any machine
    and NumPy version, whatever order the files were read in. The returned
    split's checksum identifies the sample (SHA-256 over its sorted names).
    """
    names = list(split.names) if split.names else [str(i) for i in range(len(split))]
    n = min(n, len(split))
    labels, counts = np.unique(split.y, return_counts=True)
    # Proportional quotas; the largest fractional remainders get the spare places.
    quota = counts * n / max(len(split), 1)
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take), kind="stable")[: n - take.sum()]] += 1
    picked = []
    for label, k in zip(labels, take, strict=True):
        idx = np.flatnonzero(split.y == label)
        rank = sorted(idx, key=lambda i: hashlib.sha256(f"{seed}/{names[i]}".encode()).hexdigest())
        picked.extend(rank[:k])
    order = np.sort(np.asarray(picked, np.int64))
    chosen = [names[i] for i in order]
    return Split(split.x[order], split.y[order], chosen, _hash_listing([f"{name}\n" for name in chosen]))

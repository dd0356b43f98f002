"""Readers and writers for the two dataset layouts of spec section 8.

* REARM layout: ``train.npy``, ``valid.npy``, ``test.npy``, each an int64 array of shape
  (2, N) with row 0 the user ids and row 1 the item ids (0-based).
* MMRec layout: one tab-separated file ``<name>.inter`` with a header line. The columns
  ``userID``, ``itemID`` and ``x_label`` are required (``x_label`` 0/1/2 = train/valid/test);
  ``rating`` and ``timestamp`` may be present and are ignored.

Both layouts may hold ``image_feat.npy`` and ``text_feat.npy`` (row i is item i) and an
optional ``features.json`` that marks the features as seeded stand-ins.

The readers check the format of one file (it parses, the dtype and shape are right) and raise
:class:`~rearm_dgl.errors.DataError` naming that file; checks that need several files together
live in :mod:`rearm_dgl.data.validate`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rearm_dgl.errors import DataError
from rearm_dgl.io_utils import atomic_save, atomic_write_bytes, atomic_write_json, made_dirs

log = logging.getLogger("rearm_dgl.data")

SPLITS = ("train", "valid", "test")
SPLIT_FILES = {s: f"{s}.npy" for s in SPLITS}
IMAGE_FILE = "image_feat.npy"
TEXT_FILE = "text_feat.npy"
FEATURES_JSON = "features.json"
INTER_SUFFIX = ".inter"
INTER_REQUIRED = ("userID", "itemID", "x_label")
X_LABELS = {0: "train", 1: "valid", 2: "test"}

MMREC_DATA_URL = "https://drive.google.com/drive/folders/13cBy1EA_saTUuXxVllKgtfci2A09jyaG"
REARM_DATA_URL = "https://huggingface.co/datasets/MrShouxingMa/Baby"
DOWNLOAD_HINT = (
    f"download the real Baby/Sports/Clothing files from the MMRec data release on Google Drive "
    f"({MMREC_DATA_URL}: <name>.inter, image_feat.npy, text_feat.npy) or the REARM data "
    f"release ({REARM_DATA_URL}, likewise /Sports and /Clothing, or the Dropbox link in the "
    f"REARM README: train/valid/test.npy plus features); the layout is in data/README.md"
)
#: Dataset folder names whose missing files the download hint is about.
PAPER_DATASETS = ("baby", "sports", "clothing")


def _download_hint(directory: Path) -> str:
    """``"; <where to download>"`` for the paper's datasets, else ``""``."""
    return f"; {DOWNLOAD_HINT}" if directory.name.lower() in PAPER_DATASETS else ""


@dataclass
class RawDataset:
    """What the readers found in a dataset directory, before cross-file validation.

    Attributes:
        directory: The dataset directory.
        layout: ``"npy"`` or ``"inter"``.
        splits: Split name -> (2, N) int64 pairs.
        split_paths: Split name -> the file it was read from (the same ``.inter`` for all
            three in the MMRec layout).
        image_feat: (rows, F_v) float32 or None.
        text_feat: (rows, F_t) float32 or None.
        features_meta: Parsed ``features.json`` or None.
        files: Every file that defines the dataset's content (for the fingerprint).
    """

    directory: Path
    layout: str
    splits: dict[str, np.ndarray]
    split_paths: dict[str, Path]
    image_feat: np.ndarray | None = None
    text_feat: np.ndarray | None = None
    features_meta: dict | None = None
    files: list[Path] = field(default_factory=list)


def find_layout(directory: Path) -> tuple[str, list[Path]]:
    """Which layout ``directory`` holds and its split file(s).

    Returns:
        ``("npy", [train, valid, test])`` or ``("inter", [<name>.inter])``. When both are
        present the ``.npy`` splits win and a log line says so.

    Raises:
        DataError: if the directory is missing, or holds neither complete layout.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "dataset directory not found",
                        f"pass an existing folder, set --data-root or $REARM_DGL_DATA, or use the "
                        f"built-in `demo`{_download_hint(directory)}")
    npy = [directory / SPLIT_FILES[s] for s in SPLITS]
    present = [p for p in npy if p.is_file()]
    inters = sorted(p for p in directory.glob(f"*{INTER_SUFFIX}") if p.is_file())
    if len(present) == len(npy):
        if inters:
            log.warning("%s: holds both .npy splits and %s; using the .npy splits", directory,
                     inters[0].name)
        return "npy", npy
    if inters:
        preferred = directory / f"{directory.name}{INTER_SUFFIX}"
        if preferred in inters:
            return "inter", [preferred]
        if len(inters) > 1:
            raise DataError(directory, f"several .inter files ({', '.join(p.name for p in inters)})"
                            f" and no {preferred.name}",
                            f"keep one, or name the dataset's file {preferred.name}")
        return "inter", inters
    if present:
        missing = [p for p in npy if not p.is_file()]
        raise DataError(missing[0], "split file missing (found "
                        f"{', '.join(p.name for p in present)} but not "
                        f"{', '.join(p.name for p in missing)})",
                        f"add the missing split(s) as int64 arrays of shape (2, N)"
                        f"{_download_hint(directory)}")
    raise DataError(directory / SPLIT_FILES["train"],
                    f"no split files: expected train.npy, valid.npy and test.npy (REARM layout) "
                    f"or {directory.name}{INTER_SUFFIX} (MMRec layout) in {directory}",
                    "write the splits in one of the layouts of data/README.md"
                    f"{_download_hint(directory)}")


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY":
        raise DataError(path, "not a .npy file (the NumPy header is missing)",
                        "write it with numpy.save")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(path, f"not a readable .npy array ({exc})",
                        "write it with numpy.save (no pickled objects)") from None


def read_npy_split(path: str | Path) -> np.ndarray:
    """Read one REARM split file: an integer array of shape (2, N), returned as int64.

    Raises:
        DataError: unreadable file, non-integer dtype, or a shape other than (2, N).
    """
    path = Path(path)
    arr = _load_npy(path)
    if arr.dtype.kind not in "iu":
        raise DataError(path, f"wrong dtype {arr.dtype}: split files hold integer ids",
                        "save the split as int64, e.g. np.save(path, pairs.astype(np.int64))")
    if arr.ndim != 2 or arr.shape[0] != 2:
        raise DataError(path, f"wrong shape {arr.shape}: expected (2, N), row 0 user ids and "
                        f"row 1 item ids",
                        "transpose an (N, 2) array with pairs.T, or stack [users, items]")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise DataError(path, "ids do not fit int64", "use 0-based ids below 2**31")
    return np.ascontiguousarray(arr, dtype=np.int64)


def read_inter(path: str | Path) -> dict[str, np.ndarray]:
    """Read an MMRec ``.inter`` file into split name -> (2, N) int64 pairs.

    Raises:
        DataError: a missing required column, a value that is not an integer, or an
            ``x_label`` outside 0/1/2.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            header_line = fh.readline()
            body = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read the file ({exc})", "check the file") from None
    header = [h.strip() for h in header_line.rstrip("\r\n").split("\t")]
    missing = [c for c in INTER_REQUIRED if c not in header]
    if missing:
        raise DataError(path, f"header lacks column(s) {missing}; found {header}",
                        "the first line must be tab-separated column names including "
                        "userID, itemID and x_label (0 train, 1 valid, 2 test)")
    cols = [header.index(c) for c in INTER_REQUIRED]
    if not body.strip():
        table = np.zeros((0, 3), dtype=np.float64)
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # float64 parses "3" and "3.0" alike and holds ids up to 2**53 exactly
                table = np.loadtxt(io.StringIO(body), delimiter="\t", usecols=cols,
                                   dtype=np.float64, ndmin=2, comments=None)
        except ValueError as exc:
            # numpy counts data rows from 0; the file's line numbers include the header
            detail = re.sub(r"at row (\d+)", lambda m: f"on line {int(m.group(1)) + 2}",
                            str(exc))
            raise DataError(path, f"could not parse the rows ({detail})",
                            "every row needs tab-separated integer userID, itemID and "
                            "x_label values") from None
    if not np.isfinite(table).all() or (table != np.round(table)).any():
        raise DataError(path, "userID/itemID/x_label values must be integers",
                        "write integer ids and x_label values")
    table = table.astype(np.int64)
    labels = table[:, 2]
    bad = ~np.isin(labels, list(X_LABELS))
    if bad.any():
        raise DataError(path, f"x_label has values other than 0/1/2 (e.g. "
                        f"{int(labels[bad][0])}, {int(bad.sum())} rows)",
                        "use x_label 0 for train, 1 for valid and 2 for test")
    return {name: np.ascontiguousarray(table[labels == code, :2].T)
            for code, name in X_LABELS.items()}


def read_features(path: str | Path) -> np.ndarray:
    """Read a feature matrix (row i = item i) as float32.

    Raises:
        DataError: unreadable file, non-numeric dtype, or not two-dimensional.
    """
    path = Path(path)
    arr = _load_npy(path)
    if arr.dtype.kind not in "fiu":
        raise DataError(path, f"wrong dtype {arr.dtype}: features must be numeric",
                        "save a float32 matrix with one row per item")
    if arr.ndim != 2:
        raise DataError(path, f"wrong shape {arr.shape}: expected (items, dims)",
                        "save a 2-D matrix whose row i is the feature vector of item i")
    return np.ascontiguousarray(arr, dtype=np.float32)


def read_features_json(path: str | Path) -> dict:
    """Read ``features.json`` (``{"stand_in": bool, "seed": int, "note": str}``)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(path, f"not valid JSON ({exc})",
                        'write e.g. {"stand_in": true, "seed": 0, "note": "..."} or delete '
                        'the file if the features are real') from None
    if not isinstance(meta, dict) or not isinstance(meta.get("stand_in", False), bool):
        raise DataError(path, "expected an object with a boolean 'stand_in'",
                        'write e.g. {"stand_in": true, "seed": 0, "note": "..."}')
    return meta


def read_directory(directory: str | Path) -> RawDataset:
    """Read every file of a dataset directory (format checks only; see ``validate``)."""
    directory = Path(directory)
    layout, split_files = find_layout(directory)
    if layout == "npy":
        splits = {s: read_npy_split(p) for s, p in zip(SPLITS, split_files)}
        split_paths = dict(zip(SPLITS, split_files))
    else:
        splits = read_inter(split_files[0])
        split_paths = dict.fromkeys(SPLITS, split_files[0])
    raw = RawDataset(directory=directory, layout=layout, splits=splits,
                     split_paths=split_paths, files=list(split_files))
    for attr, name in (("image_feat", IMAGE_FILE), ("text_feat", TEXT_FILE)):
        path = directory / name
        if path.is_file():
            setattr(raw, attr, read_features(path))
            raw.files.append(path)
    meta_path = directory / FEATURES_JSON
    if meta_path.is_file():
        raw.features_meta = read_features_json(meta_path)
        raw.files.append(meta_path)
    return raw


def write_inter(path: str | Path, splits: dict[str, np.ndarray]) -> None:
    """Write split pairs as an MMRec ``.inter`` file (``userID itemID x_label``), atomically.

    Rows are written train, then valid, then test, each in the given order, so reading the
    file back gives identical arrays.
    """
    codes = {name: code for code, name in X_LABELS.items()}
    blocks = [np.column_stack([splits[s][0], splits[s][1],
                               np.full(splits[s].shape[1], codes[s], dtype=np.int64)])
              for s in SPLITS]
    buf = io.StringIO()
    buf.write("\t".join(INTER_REQUIRED) + "\n")
    np.savetxt(buf, np.concatenate(blocks), fmt="%d", delimiter="\t")
    atomic_write_bytes(path, buf.getvalue().encode("utf-8"))


def save_npy(path: str | Path, arr: np.ndarray) -> None:
    """``np.save`` through a temporary file and rename."""

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    atomic_save(path, _write)


def write_mmrec(directory: str | Path, name: str, splits: dict[str, np.ndarray],
                image_feat: np.ndarray | None = None, text_feat: np.ndarray | None = None,
                features_meta: dict | None = None) -> list[Path]:
    """Write a dataset in the MMRec layout: ``<name>.inter`` plus feature files.

    Returns:
        The paths written.
    """
    directory = Path(directory)
    # Every file is written into a scratch folder first and moved into place only when all
    # are written, so a failure leaves neither a partial dataset nor a new empty folder.
    with made_dirs(directory), tempfile.TemporaryDirectory(prefix=".write-",
                                                           dir=directory) as scratch:
        tmp = Path(scratch)
        names = [f"{name}{INTER_SUFFIX}"]
        write_inter(tmp / names[0], splits)
        for arr, fname in ((image_feat, IMAGE_FILE), (text_feat, TEXT_FILE)):
            if arr is not None:
                save_npy(tmp / fname, np.asarray(arr, dtype=np.float32))
                names.append(fname)
        if features_meta is not None:
            atomic_write_json(tmp / FEATURES_JSON, features_meta)
            names.append(FEATURES_JSON)
        for fname in names:
            os.replace(tmp / fname, directory / fname)
    return [directory / fname for fname in names]

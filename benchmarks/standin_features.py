"""Real Amazon splits plus seeded stand-in features of the real shapes.

The real REARM splits (``train/valid/test.npy``) ship without the image and text features.
``prepare(name, out_root)`` makes ``<out_root>/<name>/`` holding symlinks to the three split
files and stand-in ``image_feat.npy`` (I x 4096) and ``text_feat.npy`` (I x 384), float32,
plus ``features.json`` (``stand_in: true``), so the loader labels every figure computed on
them.

How the stand-ins are made (seeded, vectorised, a few seconds per dataset):

1. A rank-``RANK`` factorisation of the training matrix R by a randomised SVD (two power
   iterations, seeded), giving item factors ``Z = Q V sqrt(S)`` (I x RANK), scaled to unit
   variance.
2. ``image = ReLU(Z W_v + NOISE * N(0, 1))``, non-negative like CNN activations (4096-d);
   ``text = Z W_t + NOISE * N(0, 1)`` (384-d); W are seeded Gaussian maps.

So the stand-ins carry a little collaborative signal (items bought by similar users get
similar features) and no real visual or textual content. Numbers measured on them are not
comparable with published results on the real MMRec features.

Run ``python benchmarks/standin_features.py baby sports clothing --out data/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from rearm_dgl.data.io import (
    FEATURES_JSON,
    IMAGE_FILE,
    SPLIT_FILES,
    SPLITS,
    TEXT_FILE,
    read_npy_split,
    save_npy,
)
from rearm_dgl.io_utils import atomic_write_json, hash_file

VERSION = 1
IMAGE_DIM = 4096
TEXT_DIM = 384
RANK = 32
NOISE = 1.0
DEFAULT_SEED = 2025
BLOCK_ROWS = 4096
REPO_ROOT = Path(__file__).resolve().parents[1]
NOTE = (f"stand-in features from a seeded rank-{RANK} factorisation of the training matrix "
        f"plus Gaussian noise (image ReLU {IMAGE_DIM}-d, text {TEXT_DIM}-d); they carry some "
        f"collaborative signal and no visual or text content")
RECIPES = {
    "factor": NOTE,
    "uniform": f"stand-in features drawn uniform in [0, 1) (image {IMAGE_DIM}-d, then text "
               f"{TEXT_DIM}-d); no visual, text or collaborative content",
}


def _source_dir(name: str, source_root: str | Path) -> Path:
    root = Path(source_root).expanduser()
    if not root.is_absolute() and not (root / name).is_dir():
        root = REPO_ROOT / root  # the default is relative to the repository root
    return (root / name).resolve()


def _item_factors(train: np.ndarray, n_users: int, n_items: int,
                  rng: np.random.Generator) -> np.ndarray:
    """(I, RANK) item factors of the train matrix by a seeded randomised SVD."""
    r = sp.csr_matrix((np.ones(train.shape[1], dtype=np.float32), (train[0], train[1])),
                      shape=(n_users, n_items))
    rt = r.T.tocsr()
    q = rng.standard_normal((n_items, RANK + 8)).astype(np.float32)
    for _ in range(2):  # power iterations sharpen the top of the spectrum
        q, _r = np.linalg.qr(rt @ (r @ q))
    b = r @ q  # (U, RANK + 8)
    _u, s, vt = np.linalg.svd(b, full_matrices=False)
    z = (q @ vt.T[:, :RANK]) * np.sqrt(s[:RANK])[None, :]
    return (z / max(float(z.std()), 1e-12)).astype(np.float32)


def _features(z: np.ndarray, dim: int, relu: bool, rng: np.random.Generator) -> np.ndarray:
    w = (rng.standard_normal((z.shape[1], dim)) / np.sqrt(z.shape[1])).astype(np.float32)
    out = np.empty((z.shape[0], dim), dtype=np.float32)
    for start in range(0, z.shape[0], BLOCK_ROWS):  # bounded temporaries
        block = z[start:start + BLOCK_ROWS] @ w
        block += NOISE * rng.standard_normal(block.shape, dtype=np.float32)
        out[start:start + BLOCK_ROWS] = np.maximum(block, 0.0) if relu else block
    return out


def _up_to_date(target: Path, meta: dict, n_items: int) -> bool:
    try:
        old = json.loads((target / FEATURES_JSON).read_text())
        shapes = [np.load(target / f, mmap_mode="r").shape for f in (IMAGE_FILE, TEXT_FILE)]
    except (OSError, ValueError):
        return False
    return old == meta and shapes == [(n_items, IMAGE_DIM), (n_items, TEXT_DIM)]


def _link(src: Path, dst: Path) -> None:
    if dst.is_symlink() and Path(os.readlink(dst)) == src:
        return
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(src, tmp)
    except OSError:  # no symlinks here: copy instead
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


def _uniform(n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform [0, 1) image then text features from ``default_rng(seed)``, as float32."""
    rng = np.random.default_rng(seed)
    image = rng.random((n_items, IMAGE_DIM)).astype(np.float32)
    return image, rng.random((n_items, TEXT_DIM)).astype(np.float32)


def prepare(name: str, out_root: str | Path, source_root: str | Path = "../shared/data/amazon",
            seed: int = DEFAULT_SEED, verbose: bool = False, recipe: str = "factor") -> Path:
    """Make ``<out_root>/<name>/`` with the real splits and seeded stand-in features.

    Args:
        name: Dataset name under ``source_root`` (``baby``, ``sports``, ``clothing``).
        out_root: Folder to create the dataset folder in (never the source folder).
        source_root: Folder holding ``<name>/{train,valid,test}.npy``; a relative path is
            tried against the working directory, then against the repository root.
        seed: Seed of the stand-in features.
        recipe: ``factor`` (the default, above) or ``uniform``: uniform [0, 1) features
            drawn from ``numpy.random.default_rng(seed)``, image first, the recipe the
            authors' code was timed with (no collaborative signal at all).
        verbose: Print what was written.

    Returns:
        The dataset folder, loadable with ``load_dataset(DataConfig(dataset=str(path)))``.
        Existing stand-ins with the same seed, version and splits are kept.
    """
    t0 = time.perf_counter()
    src = _source_dir(name, source_root)
    target = Path(out_root).expanduser().resolve() / name
    if target == src:
        raise ValueError(f"{target}: the output folder must differ from the source folder")
    splits = {s: read_npy_split(src / SPLIT_FILES[s]) for s in SPLITS}
    n_users = int(max(a[0].max() for a in splits.values())) + 1
    n_items = int(max(a[1].max() for a in splits.values())) + 1
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    meta = {"stand_in": True, "seed": seed, "note": RECIPES[recipe], "version": VERSION,
            "train_hash": hash_file(src / SPLIT_FILES["train"])}
    target.mkdir(parents=True, exist_ok=True)
    for s in SPLITS:
        _link(src / SPLIT_FILES[s], target / SPLIT_FILES[s])
    if _up_to_date(target, meta, n_items):
        if verbose:
            print(f"{name}: {target} is up to date ({n_items:,} items)")
        return target
    if recipe == "uniform":
        image, text = _uniform(n_items, seed)
    else:
        rng = np.random.default_rng(seed)
        z = _item_factors(splits["train"], n_users, n_items, rng)
        image, text = _features(z, IMAGE_DIM, True, rng), _features(z, TEXT_DIM, False, rng)
    save_npy(target / IMAGE_FILE, image)
    del image
    save_npy(target / TEXT_FILE, text)
    atomic_write_json(target / FEATURES_JSON, meta)
    if verbose:
        print(f"{name}: wrote {target} in {time.perf_counter() - t0:.1f} s")
        print(f"  train/valid/test.npy -> symlinks to {src}")
        print(f"  {IMAGE_FILE} ({n_items:,} x {IMAGE_DIM}) float32, {TEXT_FILE} "
              f"({n_items:,} x {TEXT_DIM}) float32, {FEATURES_JSON} (stand_in, seed {seed})")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="+", help="dataset names, e.g. baby sports clothing")
    parser.add_argument("--out", default="data", help="output root (default: data)")
    parser.add_argument("--source", default="../shared/data/amazon",
                        help="folder holding <name>/{train,valid,test}.npy")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="factor")
    args = parser.parse_args(argv)
    for name in args.names:
        prepare(name, args.out, args.source, seed=args.seed, verbose=True, recipe=args.recipe)
    return 0


if __name__ == "__main__":
    sys.exit(main())

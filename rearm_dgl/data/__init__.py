"""Datasets: read, validate and hold one dataset as :class:`Interactions`.

``load_dataset(DataConfig)`` resolves the dataset name:

1. ``demo``: the built-in seeded generator (:mod:`rearm_dgl.data.synthetic`);
2. an existing directory path: that directory;
3. otherwise ``<data_root>/<name>``, where ``$REARM_DGL_DATA`` replaces the default
   ``data_root`` of ``data``.

The directory may use the REARM layout (``train/valid/test.npy``) or the MMRec layout
(``<name>.inter``), plus optional ``image_feat.npy``, ``text_feat.npy`` and
``features.json`` (see ``data/README.md``). Everything is validated before anything is
written; the loader writes only into the dataset's cache folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rearm_dgl.config import DataConfig
from rearm_dgl.data import io as dio
from rearm_dgl.data.dataset import Interactions
from rearm_dgl.data.synthetic import DEMO_NOTE, DemoParams, generate
from rearm_dgl.data.validate import validate
from rearm_dgl.errors import DataError
from rearm_dgl.io_utils import atomic_write_json, hash_file, hash_parts

DEMO = "demo"
DATA_ENV = "REARM_DGL_DATA"
CACHE_ENV = "REARM_DGL_CACHE"
DEFAULT_DATA_ROOT = DataConfig().data_root
CACHE_SUBDIR = "_cache"
HASH_MEMO = "file_hashes.json"

__all__ = ["DataError", "Interactions", "load_dataset", "load_demo", "resolve_dataset_dir",
           "user_cache_root", "features_note", "DEMO"]


def user_cache_root() -> Path:
    """``$REARM_DGL_CACHE`` or ``~/.cache/rearm-dgl``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rearm-dgl"


def data_root(cfg: DataConfig) -> Path:
    """The folder named datasets live in (``$REARM_DGL_DATA`` replaces the default)."""
    env = os.environ.get(DATA_ENV)
    if env and cfg.data_root == DEFAULT_DATA_ROOT:
        return Path(env).expanduser()
    return Path(cfg.data_root).expanduser()


def resolve_dataset_dir(cfg: DataConfig) -> tuple[str, Path | None]:
    """``(name, directory)`` for a config; the directory is None for the built-in demo.

    A name that is neither ``demo`` nor an existing directory resolves to
    ``<data_root>/<name>`` even if that does not exist (loading then reports it).
    """
    if cfg.dataset == DEMO:
        return DEMO, None
    as_path = Path(cfg.dataset).expanduser()
    if as_path.is_dir():
        return as_path.resolve().name, as_path
    return Path(cfg.dataset).name, data_root(cfg) / cfg.dataset


def _writable_dir(path: Path) -> bool:
    # Mode bits are checked as well as access(): a root process may write into a folder
    # whose owner marked it read-only, and the loader must not.
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(path, os.W_OK)


def _local_cache(directory: Path) -> Path | None:
    """``<dir>/_cache`` if it exists and is writable, or could be created; else None."""
    local = directory / CACHE_SUBDIR
    if local.is_dir():
        return local if _writable_dir(local) else None
    return local if _writable_dir(directory) else None


def _file_hashes(files: list[Path], memo_dir: Path) -> list[str]:
    """Content hashes of ``files``, memoised in ``memo_dir`` by each file's stat stamp.

    The stamp is the size, mtime, ctime, inode and device. An edit in place that keeps the
    size and sets the mtime back still moves the ctime, which no user call can set, and a
    file replaced by another has a new inode. A file that changes while it is hashed is not
    memoised.
    """
    memo_path = memo_dir / HASH_MEMO
    try:
        memo = json.loads(memo_path.read_text())
        if not isinstance(memo, dict):
            memo = {}
    except (OSError, ValueError):
        memo = {}
    changed = False
    out = []
    for f in files:
        stamp = _stat_stamp(f)
        key = str(f.resolve())
        entry = memo.get(key)
        if (isinstance(entry, dict) and "hash" in entry
                and all(entry.get(k) == v for k, v in stamp.items())):
            out.append(entry["hash"])
            continue
        digest = hash_file(f)
        if _stat_stamp(f) == stamp:
            memo[key] = {**stamp, "hash": digest}
            changed = True
        out.append(digest)
    if changed:
        try:
            atomic_write_json(memo_path, memo)
        except OSError:
            pass  # the memo only saves time
    return out


def _stat_stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}


def features_note(meta: dict | None) -> str:
    """The sentence every numeric output repeats when features are stand-ins ('' if real)."""
    if not meta or not meta.get("stand_in"):
        return ""
    text = (f"Features are seeded stand-ins (seed {meta.get('seed', '?')}), not the real "
            f"MMRec image/text features")
    extra = str(meta.get("note", "")).strip()
    return f"{text}: {extra}" if extra else f"{text}."


def load_demo(cfg: DataConfig | None = None, params: DemoParams | None = None) -> Interactions:
    """The built-in demo dataset as :class:`Interactions` (nothing is written)."""
    cfg = cfg or DataConfig()
    params = params or DemoParams()
    d = generate(params)
    fp = params.fingerprint()
    cache = Path(cfg.cache_dir) if cfg.cache_dir else user_cache_root() / f"{DEMO}-{fp[:12]}"
    return Interactions(
        name=DEMO, source=f"builtin:{DEMO}", n_users=d.n_users, n_items=d.n_items,
        train=d.train, valid=d.valid, test=d.test, image_feat=d.image_feat,
        text_feat=d.text_feat, features_note=DEMO_NOTE[0].upper() + DEMO_NOTE[1:] + ".",
        dropped={"valid": 0, "test": 0}, fingerprint=fp, cache_dir=cache)


def load_dataset(cfg: DataConfig) -> Interactions:
    """Load, validate and describe one dataset.

    Args:
        cfg: Which dataset (``demo``, a name under ``data_root``, or a directory path) and
            where its caches go.

    Returns:
        The dataset with ids, splits, CSR views, features, fingerprint and cache folder.

    Raises:
        DataError: a missing directory or file, or malformed content, naming the file, the
            problem and the fix. Nothing is written in that case.
    """
    name, directory = resolve_dataset_dir(cfg)
    if directory is None:
        return load_demo(cfg)
    raw = dio.read_directory(directory)
    checked = validate(raw)
    # Everything below may write (hash memo), and runs only after validation passed.
    local = None if cfg.cache_dir else _local_cache(directory)
    memo_dir = Path(cfg.cache_dir) if cfg.cache_dir else (local or user_cache_root())
    hashes = _file_hashes(raw.files, memo_dir)
    fp = hash_parts([raw.layout] + [[f.name, h] for f, h in zip(raw.files, hashes)])
    if cfg.cache_dir:
        cache = Path(cfg.cache_dir)
    elif local is not None:
        cache = local
    else:
        cache = user_cache_root() / f"{name}-{fp[:12]}"
    return Interactions(
        name=name, source=str(directory.resolve()), n_users=checked.n_users,
        n_items=checked.n_items, train=checked.splits["train"], valid=checked.splits["valid"],
        test=checked.splits["test"], image_feat=raw.image_feat, text_feat=raw.text_feat,
        features_note=features_note(raw.features_meta), dropped=checked.dropped,
        fingerprint=fp, cache_dir=cache)


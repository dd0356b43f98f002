"""The built-in ``demo`` dataset: a small, seeded, Amazon-like multi-modal dataset.

How it is made (everything from one ``numpy.random.Generator``):

1. ``N_TOPICS`` taste centres in a ``LATENT_DIM``-d space. Each item belongs to one topic and
   its latent vector is that centre plus noise; each user mixes one to three topics.
2. Item popularity follows a power law (Zipf exponent ``POP_EXPONENT``) over a random item
   order.
3. Each user draws ``MIN_PER_USER + Geometric`` items (mean about ``MEAN_PER_USER``) without
   replacement, with probability proportional to ``popularity * exp(TASTE * <user, item>)``
   (Gumbel top-k, one vectorised sort).
4. Items nobody picked are removed and the rest re-indexed, so every item id occurs.
5. Features carry the item's latent vector through a random linear map plus noise:
   image ``IMAGE_DIM``-d non-negative (ReLU, like CNN activations), text ``TEXT_DIM``-d.
6. Per user, a random order splits the items 8:1:1 (at least one valid, one test and
   three train items, since every user has at least ``MIN_PER_USER`` items).

Both the interactions and the features reveal the taste structure, so collaborative,
feature-based and graph models separate from popularity and from one another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rearm_dgl.io_utils import hash_parts

GENERATOR_VERSION = 1
DEFAULT_SEED = 2025
N_USERS = 2000
N_ITEMS = 1000
N_TOPICS = 12
LATENT_DIM = 16
IMAGE_DIM = 256
TEXT_DIM = 64
MIN_PER_USER = 5
MEAN_PER_USER = 12
MAX_PER_USER = 60
POP_EXPONENT = 0.7
TASTE = 5.0
FEATURE_NOISE = 0.5
VALID_FRAC = 0.1
TEST_FRAC = 0.1

DEMO_NOTE = ("demo data: synthetic interactions and features from a seeded generator "
             "(rearm_dgl.data.synthetic), not a real dataset; figures on it only compare "
             "models with one another")


@dataclass(frozen=True)
class DemoParams:
    """Generator parameters (their hash is the demo's fingerprint)."""

    seed: int = DEFAULT_SEED
    n_users: int = N_USERS
    n_items: int = N_ITEMS
    n_topics: int = N_TOPICS
    latent_dim: int = LATENT_DIM
    image_dim: int = IMAGE_DIM
    text_dim: int = TEXT_DIM
    min_per_user: int = MIN_PER_USER
    mean_per_user: int = MEAN_PER_USER
    max_per_user: int = MAX_PER_USER
    pop_exponent: float = POP_EXPONENT
    taste: float = TASTE
    feature_noise: float = FEATURE_NOISE

    def fingerprint(self) -> str:
        return hash_parts(["demo", GENERATOR_VERSION, asdict(self)])


@dataclass(frozen=True)
class DemoData:
    """Generator output: splits, features and the latent truth (for tests and diagnostics)."""

    n_users: int
    n_items: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    image_feat: np.ndarray
    text_feat: np.ndarray
    user_latent: np.ndarray
    item_latent: np.ndarray


def generate(params: DemoParams | None = None) -> DemoData:
    """Generate the demo dataset; the same params give identical arrays."""
    p = params or DemoParams()
    rng = np.random.default_rng(p.seed)
    d = p.latent_dim

    centres = rng.standard_normal((p.n_topics, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    item_topic = rng.integers(0, p.n_topics, p.n_items)
    item_z = centres[item_topic] + 0.35 * rng.standard_normal((p.n_items, d))
    # each user mixes 1-3 topics with Dirichlet weights
    n_mix = rng.integers(1, 4, p.n_users)
    mix = rng.dirichlet(np.ones(p.n_topics) * 0.3, p.n_users)
    top = np.argsort(-mix, axis=1)
    keep = np.arange(p.n_topics)[None, :] < n_mix[:, None]
    mask = np.zeros_like(mix, dtype=bool)
    np.put_along_axis(mask, top, keep, axis=1)
    mix = np.where(mask, mix, 0.0)
    mix /= mix.sum(axis=1, keepdims=True)
    user_z = mix @ centres + 0.25 * rng.standard_normal((p.n_users, d))

    ranks = rng.permutation(p.n_items) + 1
    log_pop = -p.pop_exponent * np.log(ranks)

    # Gumbel top-k: sorting log-weights + Gumbel noise samples without replacement
    logits = p.taste * (user_z @ item_z.T) + log_pop[None, :]  # (U, I), small by design
    keys = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-keys, axis=1)
    extra = rng.geometric(1.0 / (p.mean_per_user - p.min_per_user + 1), p.n_users) - 1
    n_per_user = np.minimum(p.min_per_user + extra, min(p.max_per_user, p.n_items))
    take = np.arange(p.n_items)[None, :] < n_per_user[:, None]
    users = np.repeat(np.arange(p.n_users), n_per_user)
    items = order[take]  # row-major: grouped by user

    # drop never-picked items and re-index, so every item id occurs
    used = np.zeros(p.n_items, dtype=bool)
    used[items] = True
    new_id = np.cumsum(used) - 1
    items = new_id[items]
    item_z = item_z[used]
    n_items = int(used.sum())

    # per-user random order -> 8:1:1 split
    starts = np.concatenate([[0], np.cumsum(n_per_user)[:-1]])
    perm_key = rng.random(users.size)
    idx = np.lexsort((perm_key, users))
    pos = np.arange(users.size) - np.repeat(starts, n_per_user)
    n_test = np.maximum(1, np.rint(TEST_FRAC * n_per_user)).astype(np.int64)
    n_valid = np.maximum(1, np.rint(VALID_FRAC * n_per_user)).astype(np.int64)
    label = np.where(pos < np.repeat(n_test, n_per_user), 2,
                     np.where(pos < np.repeat(n_test + n_valid, n_per_user), 1, 0))
    users, items = users[idx], items[idx]
    pairs = {code: np.stack([users[label == code], items[label == code]]).astype(np.int64)
             for code in (0, 1, 2)}
    for code in pairs:  # canonical order: by user, then item
        o = np.lexsort((pairs[code][1], pairs[code][0]))
        pairs[code] = np.ascontiguousarray(pairs[code][:, o])

    w_img = rng.standard_normal((d, p.image_dim)) / np.sqrt(d)
    w_txt = rng.standard_normal((d, p.text_dim)) / np.sqrt(d)
    image = np.maximum(item_z @ w_img + p.feature_noise * rng.standard_normal(
        (n_items, p.image_dim)), 0.0)
    text = item_z @ w_txt + p.feature_noise * rng.standard_normal((n_items, p.text_dim))

    return DemoData(n_users=p.n_users, n_items=n_items, train=pairs[0], valid=pairs[1],
                    test=pairs[2], image_feat=image.astype(np.float32),
                    text_feat=text.astype(np.float32), user_latent=user_z.astype(np.float32),
                    item_latent=item_z.astype(np.float32))

"""Published REARM numbers that the "reported vs reproduced" table compares against.

Only numbers checked against the paper are listed (spec: Ma et al., ACM MM 2025, arXiv
2508.13745). They were obtained with the real MMRec image and text features.
"""

from __future__ import annotations

PAPER_SOURCE = "Ma et al., ACM MM 2025, arXiv 2508.13745"

#: (dataset, metric, published value) of REARM.
PAPER_RESULTS: tuple[tuple[str, str, float], ...] = (
    ("sports", "Recall@20", 0.1231),
    ("clothing", "Recall@20", 0.0998),
)

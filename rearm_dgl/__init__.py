"""rearm-dgl: REARM (ACM MM 2025) for multi-modal recommendation, on DGL heterographs."""

__version__ = "0.1.0"

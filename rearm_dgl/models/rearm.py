"""REARM: Refining contrastive learning and homography relations (Ma et al., ACM MM 2025).

Paper: https://arxiv.org/abs/2508.13745. Spec: ``shared/spec/rearm.md`` sections 2-4.
"""

from __future__ import annotations

from dataclasses import dataclass

from rearm_dgl.models.base import ModelConfig


@dataclass(frozen=True)
class REARMConfig(ModelConfig):
    """REARM hyperparameters. Defaults are the paper's Baby settings (spec section 6).

    Graph sizes (``user_knn_k``, ``item_knn_k``) live in :class:`~rearm_dgl.config.GraphConfig`
    because they change the heterograph.

    Attributes:
        embedding_size: d, the ID embedding width.
        n_layers: Heterography (LightGCN) layers over the interactions.
        n_uu_layers: User homography layers over G_u.
        n_ii_layers: Item homography layers over G_i.
        rank: r, the rank of the meta-network's per-node low-rank map.
        s_drop: Attention-weight dropout of the two self-attention blocks.
        m_drop: Attention-weight dropout of the two mutual (cross) attention blocks.
        u_mm_image_weight: b, image share of the user interest graph.
        i_mm_image_weight: a, image share of the item semantic graph.
        uu_co_weight: c_u, co-occurrence share of G_u.
        ii_co_weight: c_i, co-occurrence share of G_i.
        cl_tmp: tau of the InfoNCE loss.
        cl_loss_weight: Weight of the contrastive loss.
        diff_loss_weight: Weight of the orthogonal constraint.
        reg_weight: AdamW weight decay on all parameters.
        train_meta: Let ``meta_u``/``meta_i`` receive gradients. The authors' code detaches
            them, so they keep their initial weights; False reproduces that.
        use_share: Ablation: keep the meta-network share branch.
        use_orth: Ablation: keep the orthogonal constraint.
        use_cl: Ablation: keep the contrastive loss.
        use_user_co: Ablation: keep user co-occurrence in G_u.
        use_item_co: Ablation: keep item co-occurrence in G_i.
        use_user_interest: Ablation: keep the user interest kNN graph in G_u.
        use_item_semantic: Ablation: keep the item semantic kNN graph in G_i.
        use_homography: Ablation: run the G_u / G_i propagation at all.
        use_attention: Ablation: keep the four attention blocks.
    """

    embedding_size: int = 64
    n_layers: int = 4
    n_uu_layers: int = 1
    n_ii_layers: int = 1
    rank: int = 3
    s_drop: float = 0.4
    m_drop: float = 0.6
    u_mm_image_weight: float = 0.2
    i_mm_image_weight: float = 0.0
    uu_co_weight: float = 0.4
    ii_co_weight: float = 0.2
    cl_tmp: float = 0.6
    cl_loss_weight: float = 5e-6
    diff_loss_weight: float = 5e-5
    reg_weight: float = 5e-4
    train_meta: bool = False
    use_share: bool = True
    use_orth: bool = True
    use_cl: bool = True
    use_user_co: bool = True
    use_item_co: bool = True
    use_user_interest: bool = True
    use_item_semantic: bool = True
    use_homography: bool = True
    use_attention: bool = True

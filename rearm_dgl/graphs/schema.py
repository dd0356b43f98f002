"""Node and edge type names of the relation heterograph (spec section 1).

Edges point from the node that sends a message to the node that receives it: for the
propagation ``y = G x``, entry ``G[i, j]`` is the edge ``j -> i`` with weight ``G[i, j]``.
"""

USER = "user"
ITEM = "item"

# Interactions, both directions; edge data W holds 1/sqrt(deg(u) deg(i)).
INTERACTS = (USER, "interacts", ITEM)
INTERACTED_BY = (ITEM, "interacted_by", USER)

# Co-occurrence, top-n_co by shared count, row weights in edge data W.
USER_CO = (USER, "co_user", USER)
ITEM_CO = (ITEM, "co_item", ITEM)

# Modality kNN relations; edge data W holds similarity / k (spec 1.3). One edge type per
# modality so the image/text mixing weights can change without a rebuild.
USER_INTEREST_IMAGE = (USER, "interest_image", USER)
USER_INTEREST_TEXT = (USER, "interest_text", USER)
ITEM_SEMANTIC_IMAGE = (ITEM, "semantic_image", ITEM)
ITEM_SEMANTIC_TEXT = (ITEM, "semantic_text", ITEM)

# Self-loops, only in operators derived from the heterograph (graphs/derived.py).
USER_SELF = (USER, "self_user", USER)
ITEM_SELF = (ITEM, "self_item", ITEM)

WEIGHT = "w"  # edge-data key of every relation's weight

INTERACTION_RELATIONS = (INTERACTS, INTERACTED_BY)
USER_RELATIONS = (USER_CO, USER_INTEREST_IMAGE, USER_INTEREST_TEXT)
ITEM_RELATIONS = (ITEM_CO, ITEM_SEMANTIC_IMAGE, ITEM_SEMANTIC_TEXT)
ALL_RELATIONS = INTERACTION_RELATIONS + USER_RELATIONS + ITEM_RELATIONS

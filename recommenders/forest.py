"""Every product's boosted trees as flat numpy arrays, walked together: one call scores all products.

Why: XGBoost's ``predict`` has a fixed cost per call and per DMatrix, so ten products cost ten calls per
micro-batch, and the reasons more (`rtrec bench score --json`: one row's scores and reasons 0.875 ms through
XGBoost, 0.147 ms here). Here all trees of all products are one set of node
arrays; a batch of rows walks every tree at once, one level per step (``depth`` vectorised steps in all, four
for the default depth 4), and a product's margin is the sum of its trees' leaves. The walk keeps the path, so
the reasons' contributions (Saabas: each split's change of the node mean, credited to the split's feature,
what XGBoost's ``approx_contribs`` computes) cost no second walk.

The arrays come from the boosters' own JSON dump, and the tests compare predictions and contributions with
XGBoost's on the same rows, so the trained models stay the only truth; this is only a faster way to read them.

Layout: nodes of all trees in one array, renumbered so a node's right child is its left child + 1. A leaf
points to itself as its left child and always "goes left" (threshold +inf, missing goes left), so a walk that
reaches a leaf early stays there and every row takes the same number of steps.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

_LARGEST = np.float32(np.finfo(np.float32).max)


@dataclass(frozen=True)
class _Tree:
    feature: list[int]
    threshold: list[float]
    default_left: list[bool]
    left: list[int]
    value: list[float]  # the leaf's output; 0 for a split
    mean: list[float]  # the node's mean output over the training rows it saw (Saabas' node value)
    depth: int


def _tree_from_dump(tree: dict[str, Any], base: int) -> _Tree:
    """One XGBoost tree, renumbered breadth first from ``base`` so right == left + 1."""
    left_of, right_of = tree["left_children"], tree["right_children"]
    order = [0]
    depth_of = {0: 0}
    for node in order:  # breadth first; children are appended as they are found
        if left_of[node] != -1:
            for child in (left_of[node], right_of[node]):
                depth_of[child] = depth_of[node] + 1
                order.append(child)
    new_id = {old: base + i for i, old in enumerate(order)}
    mean = _node_means(tree)
    out = _Tree([], [], [], [], [], [], max(depth_of.values()))
    for old in order:
        leaf = left_of[old] == -1
        out.feature.append(0 if leaf else int(tree["split_indices"][old]))
        out.threshold.append(np.inf if leaf else float(tree["split_conditions"][old]))
        out.default_left.append(True if leaf else bool(tree["default_left"][old]))
        out.left.append(new_id[old] if leaf else new_id[left_of[old]])
        out.value.append(float(tree["split_conditions"][old]) if leaf else 0.0)
        out.mean.append(mean[old])
    return out


def _node_means(tree: dict[str, Any]) -> list[float]:
    """Each node's cover-weighted mean leaf value, as XGBoost's FillNodeMeanValues computes it."""
    left_of, right_of = tree["left_children"], tree["right_children"]
    hessian, outputs = tree["sum_hessian"], tree["split_conditions"]
    mean = [0.0] * len(left_of)

    def fill(node: int) -> float:
        if left_of[node] == -1:
            mean[node] = float(outputs[node])
        else:
            left, right = left_of[node], right_of[node]
            total = fill(left) * hessian[left] + fill(right) * hessian[right]
            mean[node] = total / hessian[node]
        return mean[node]

    fill(0)
    return mean


def _base_margin(dump: dict[str, Any]) -> float:
    """The booster's starting margin: its base_score (a probability for binary:logistic) as a log-odds."""
    learner = dump["learner"]
    objective = learner["objective"]["name"]
    if objective != "binary:logistic":
        raise ValueError(f"only binary:logistic boosters can be compiled, not {objective}")
    base = float(str(learner["learner_model_param"]["base_score"]).strip("[]"))
    return float(np.log(base / (1 - base)))


@dataclass(frozen=True)
class Scores:
    """What one walk gives: every row's probability for every product, and the path taken."""

    probabilities: np.ndarray  # (rows, products)
    path: list[np.ndarray]  # depth + 1 arrays (rows x trees): the node each row was at in each tree, by step


class Forest:
    """All products' trees; ``score`` walks a batch of rows (float32, NaN for missing) through all of them."""

    def __init__(self, products: Sequence[str], trees: Sequence[Sequence[_Tree]], base_margins: Sequence[float]):
        self.products = tuple(products)
        self.index = {p: i for i, p in enumerate(self.products)}
        flat = [t for product_trees in trees for t in product_trees]
        self.depth = max((t.depth for t in flat), default=0)
        self.feature = np.array([f for t in flat for f in t.feature], dtype=np.intp)
        self.threshold = np.array([x for t in flat for x in t.threshold], dtype=np.float32)
        self.default_left = np.array([d for t in flat for d in t.default_left], dtype=bool)
        self.left = np.array([c for t in flat for c in t.left], dtype=np.intp)
        self.value = np.array([v for t in flat for v in t.value], dtype=np.float64)
        self.mean = np.array([m for t in flat for m in t.mean], dtype=np.float64)
        sizes = np.array([len(t.feature) for t in flat], dtype=np.intp)
        self.roots = (np.cumsum(sizes) - sizes).astype(np.intp)
        counts = [len(product_trees) for product_trees in trees]
        # trees of product i are roots[starts[i]:starts[i + 1]]
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        self.base_margins = np.asarray(base_margins, dtype=np.float64)

    @classmethod
    def from_boosters(cls, boosters: dict[str, xgb.Booster]) -> Forest:
        products, trees, margins = [], [], []
        base = 0
        for product, booster in boosters.items():
            dump = json.loads(booster.save_raw("json"))
            model = dump["learner"]["gradient_booster"]["model"]
            product_trees = []
            for tree in model["trees"]:
                converted = _tree_from_dump(tree, base)
                base += len(converted.feature)
                product_trees.append(converted)
            products.append(product)
            trees.append(product_trees)
            margins.append(_base_margin(dump))
        return cls(products, trees, margins)

    def score(self, matrix: np.ndarray) -> Scores:
        """Probabilities of every product for each row of ``matrix`` (rows x features, float32)."""
        rows, features = matrix.shape
        # +inf would walk a leaf "right" (its threshold is +inf); NaN stays NaN: missing
        values = np.minimum(matrix, _LARGEST).astype(np.float32, copy=False).ravel()
        missing = np.isnan(values)
        row_start = (np.arange(rows, dtype=np.intp) * features)[:, None]
        nodes = np.broadcast_to(self.roots, (rows, len(self.roots)))
        path = [nodes]
        for _ in range(self.depth):  # np.take on flat arrays: cheaper than fancy indexing
            cell = np.take(self.feature, nodes)
            cell += row_start
            go_left = np.take(values, cell) < np.take(self.threshold, nodes)
            go_left |= np.take(missing, cell) & np.take(self.default_left, nodes)
            nodes = np.take(self.left, nodes)
            nodes += ~go_left
            path.append(nodes)
        if len(self.roots):
            margins = np.add.reduceat(np.take(self.value, nodes), self.starts[:-1], axis=1) + self.base_margins
        else:
            margins = np.zeros((rows, 0))
        return Scores(1.0 / (1.0 + np.exp(-margins)), path)

    def contributions(self, scores: Scores, rows: Sequence[int], product: str, features: int) -> np.ndarray:
        """Saabas contributions (rows x features) of ``product``'s score for the given rows of a walk: each
        split credits its feature with the change of the node mean it caused."""
        p = self.index[product]
        trees = slice(self.starts[p], self.starts[p + 1])
        path = np.stack([nodes[list(rows), trees] for nodes in scores.path])  # (depth + 1, len(rows), trees)
        change = self.mean[path[1:]] - self.mean[path[:-1]]  # a leaf "moves" to itself: no change
        flat = np.arange(len(rows))[None, :, None] * features + self.feature[path[:-1]]
        return np.bincount(flat.ravel(), weights=change.ravel(), minlength=len(rows) * features).reshape(
            len(rows), features
        )

r"""XGBoost's exact `pred_contribs` (path-dependent TreeSHAP) for many rows at once, compiled with numba.

Public API:
    pred_contribs(booster, X, feature_names=None, nthread=None) -> float32 array (n, n_features + 1)
        the same numbers as booster.predict(DMatrix(X), pred_contribs=True) (last column: the bias)
    explainer(booster) -> TreeShapModel | None     the compiled tables; None = not supported (fallback)
    top_k_contributions(contribs, k) -> (order int (n, k), picked float32 (n, k))
        per row the k largest |contribution|s, ties by feature order (= stable argsort of -|c|)

Why: XGBoost's TreeSHAP walks every node of every tree for every row, O(L·D²) per tree (L leaves, D
depth): ~2.7 s for the top-5 contributions of 100,000 rows with the 13-tree bench model, minutes with a
200-tree depth-6 model. This is the "Fast TreeSHAP v2" idea (Yang, 2021): for a leaf whose root path tests
the distinct features P (|P| = p), the tree's share of the SHAP values depends on a row only through the
subset Q ⊆ P of path features whose conditions the row meets. Path-dependent TreeSHAP values a coalition
S as v(S) = leaf · Π_{f∈P∩S} o_f · Π_{f∈P\S} z_f (o_f: the row meets every condition on f along the path;
z_f: the product of the cover ratios child/parent at f's nodes), a product game over P whose Shapley
values are

    i ∈ Q:  φ_i = leaf · (1 - z_i) · Π_{f∈P\Q} z_f · Σ_j w(j, p) · e_j(Q \ {i})
    i ∉ Q:  φ_i = -leaf · Π_{f∈P\Q} z_f · Σ_j w(j, p) · e_j(Q)

with w(j, p) = j!(p-j-1)!/p! and e_j(A) the coefficient of t^j in Π_{f∈A}(z_f + t) (`_leaf_row`).

Tables: a leaf's 2^p x p values are computed once per model. Sibling leaves are then merged into groups:
a group is the highest subtree whose index bits — the p_root prefix bits (which path features above its
root the row meets) plus one bit per internal node inside it (which way the row goes) — fit GROUP_BITS;
its table row for an index is the sum of its leaves' rows for the Q each one gets, over the group's
features. A row then costs, per tree, one comparison per internal node (a mask per node above the
groups, a decision bit inside them) and one table read per feature of each group: ~40 reads for a tree
of ~30 leaves instead of ~150 (one per path feature of every leaf) with leaf tables alone. All of it runs
with the block's 128 rows as the inner loop (vectorized). Tables larger than TABLE_BUDGET_BYTES make the
groups smaller; single leaves with more than MAX_TABLE_BITS distinct path features are computed per row.

Equality: the same game and the same decisions as XGBoost (float32 `x < split_condition`, missing values
follow the default direction, cover = `sum_hessian`, ratios divided in float32), computed in float64 and
returned as float32 like XGBoost; XGBoost itself computes in float32, so the two agree to float32 rounding
(~1e-6 of a row's largest contribution), not bit for bit. The bias column is XGBoost's own (the same for
every row). Boosters this does not handle (dart, gblinear, multi-class or multi-target, categorical
splits, zero covers, paths with more than MAX_PATH_FEATURES distinct features) and inputs with ±inf
(whose DMatrix XGBoost refuses) go to `booster.predict(..., pred_contribs=True)` unchanged.

A row's numbers do not depend on the batch it comes in or on the threads: `nthread` > 1 splits the rows
over plain threads running the compiled kernel, which releases the GIL (no numba threading layer, so
nothing process-wide, fork-safe and safe for concurrent callers). First use in a process: the kernels are
compiled once and cached next to this file (numba `cache=True`, ~20-30 s cold on a busy 2-core host,
~0.5 s to load); `explainer` builds a booster's tables once (~0.05 s for 13 trees, ~0.3-1 s for 200).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import orjson
import xgboost as xgb
from numba import njit

log = logging.getLogger(__name__)

MAX_PATH_FEATURES = 31  # masks are int32 bit sets
GROUP_BITS = 8  # a subtree group's table has 2^(prefix bits + decisions) rows
MAX_TABLE_BITS = 12  # a single leaf with more distinct path features is computed on the fly
TABLE_BUDGET_BYTES = 64 << 20  # all tables of a model (float64); smaller groups when they do not fit
BLOCK_ROWS = 128  # rows per work item, the inner (vectorized) loop of every step
PARALLEL_MIN_ROWS = 4 * BLOCK_ROWS  # fewer rows per thread are not worth a thread

# w[p, j] = j!(p-j-1)!/p!, the Shapley weight of a coalition of j of the other p-1 players
_WEIGHTS = np.zeros((MAX_PATH_FEATURES + 1, MAX_PATH_FEATURES + 1))
for _p in range(1, MAX_PATH_FEATURES + 1):
    for _j in range(_p):
        _WEIGHTS[_p, _j] = math.factorial(_j) * math.factorial(_p - _j - 1) / math.factorial(_p)


class Unsupported(ValueError):
    """The booster uses something the fast path does not implement; XGBoost's own path is used."""


@dataclass(frozen=True, eq=False)
class TreeShapModel:
    """The compiled form of a booster: per tree, the "upper" internal nodes (above every group) and the
    groups, each a subtree whose SHAP values are tabulated by (prefix mask, decisions inside it)."""

    n_features: int
    bias: np.float32  # XGBoost's last pred_contribs column: base margin + Σ tree expectations
    group_bits: int  # the largest index (prefix bits + decisions) of a subtree group
    arrays: tuple  # see _KERNEL_FIELDS

    @property
    def n_trees(self) -> int:
        return len(self.arrays[0]) - 1

    def field(self, name: str) -> np.ndarray:
        return self.arrays[_KERNEL_FIELDS.index(name)]

    def contributions(self, X: np.ndarray, nthread: int | None = None) -> np.ndarray:
        """(n, n_features + 1) float32, the layout of XGBoost's pred_contribs."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if not X.flags.writeable:  # numba types read-only arrays apart: one more compile for nothing
            X = X.copy()
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-d array with {self.n_features} columns, got shape {X.shape}")
        out = np.empty((X.shape[0], self.n_features + 1), dtype=np.float32)
        out[:, -1] = self.bias
        n = X.shape[0]
        threads = min(_threads(nthread), max(1, n // PARALLEL_MIN_ROWS))
        if threads <= 1:
            _contribs_serial(X, self.arrays, _WEIGHTS, out)
            return out
        # the kernel releases the GIL: plain threads over row ranges (no numba threading layer, so nothing
        # process-wide, nothing unsafe after fork or across concurrent callers)
        step = -(-n // threads // BLOCK_ROWS) * BLOCK_ROWS
        errors: list[BaseException] = []

        def run(a: int, b: int) -> None:
            try:
                _contribs_serial(X[a:b], self.arrays, _WEIGHTS, out[a:b])
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

        workers = [threading.Thread(target=run, args=(a, min(n, a + step)), daemon=True)
                   for a in range(step, n, step)]
        for worker in workers:
            worker.start()
        run(0, min(n, step))
        for worker in workers:
            worker.join()
        if errors:
            raise errors[0]
        return out


# the kernel's model arrays, in this order (ranges are start offsets with one extra end entry)
_KERNEL_FIELDS = (
    "tree_upper",  # int64 (T+1): each tree's upper internal nodes
    "tree_groups",  # int64 (T+1): each tree's groups
    "up_node", "up_feature", "up_threshold", "up_default_left", "up_left", "up_right", "up_bit",
    "group_root",  # int32: local id of the group's root node (its mask holds the prefix bits)
    "group_prefix",  # int32: distinct features on the path to the root = bits of the mask used
    "group_slots",  # int64 (G+1): the group's features (slot_feature), prefix ones first, by bit
    "group_decisions",  # int64 (G+1): the group's internal nodes, breadth-first (decision bits)
    "group_offset",  # int64: start of the table (2^bits rows x slots), -1 = a leaf computed on the fly
    "group_leaf",  # int32: row in otf_z / otf_value of a leaf computed on the fly, else -1
    "dec_feature", "dec_threshold", "dec_default_left",
    "slot_feature",  # int32
    "table",  # float64
    "otf_z",  # float64 (n, max p): cover-ratio products of an on-the-fly leaf's path features, by bit
    "otf_value",  # float64
    "max_nodes",  # int64 (1,)
)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _threads(nthread: int | None) -> int:
    if nthread is not None and nthread > 0:
        return int(nthread)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def explainer(booster: xgb.Booster) -> TreeShapModel | None:
    """The compiled tables of `booster` (built once per booster and tree count), None if unsupported."""
    rounds = booster.num_boosted_rounds()
    with _CACHE_LOCK:
        hit = _CACHE.get(booster)
    if hit is not None and hit[0] == rounds:
        return hit[1]
    try:
        built: TreeShapModel | None = build(booster)
    except Unsupported as exc:
        log.info("exact fast TreeSHAP not used (%s); XGBoost's pred_contribs instead", exc)
        built = None
    with _CACHE_LOCK:
        _CACHE[booster] = (rounds, built)
    return built


def pred_contribs(booster: xgb.Booster, X: np.ndarray, feature_names: list[str] | None = None,
                  nthread: int | None = None, matrix: xgb.DMatrix | None = None) -> np.ndarray:
    """booster.predict(DMatrix(X), pred_contribs=True), computed by the fast path where supported.

    `matrix` (a DMatrix of X) is only used by the fallback, which builds one from X when it is None.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    model = explainer(booster)
    if model is not None and X.ndim == 2 and X.shape[1] == model.n_features and not np.isinf(X).any():
        return model.contributions(X, nthread)
    if matrix is None:
        names = feature_names if feature_names is not None else booster.feature_names
        matrix = xgb.DMatrix(X, feature_names=names, nthread=nthread or -1)
    return booster.predict(matrix, pred_contribs=True)


def top_k_contributions(contribs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the columns of the k largest |contribs| (ties: lower column first) and their values.

    The same as np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :k] for finite values, without
    sorting every row: one pass per row keeping the best k.
    """
    contribs = np.ascontiguousarray(contribs, dtype=np.float32)
    k = max(0, min(int(k), contribs.shape[1]))
    order = np.empty((contribs.shape[0], k), dtype=np.int64)
    picked = np.empty((contribs.shape[0], k), dtype=np.float32)
    if k and len(contribs):
        if np.isnan(contribs).any():  # NaN sorts last in argsort; keep the reference's exact behaviour
            order[:] = np.argsort(-np.abs(contribs), axis=1, kind="stable")[:, :k]
            picked[:] = np.take_along_axis(contribs, order, axis=1)
        else:
            _top_k(contribs, order, picked)
    return order, picked


# ---- building the tables ---------------------------------------------------------------------------------

class _Tree:
    """One tree in breadth-first order (local ids; a parent before its children) with its path facts."""

    def __init__(self, tree: dict, n_features: int):
        left, right = tree["left_children"], tree["right_children"]
        n = len(left)
        if int(tree.get("tree_param", {}).get("size_leaf_vector", "1") or 1) > 1:
            raise Unsupported("vector-leaf trees")
        split_type = tree.get("split_type") or [0] * n
        if any(int(s) != 0 for i, s in enumerate(split_type) if left[i] != -1):
            raise Unsupported("categorical splits")
        order = [0]
        for node in order:
            if left[node] != -1:
                order += [left[node], right[node]]
        if len(order) != n or len(set(order)) != n:
            raise Unsupported("a tree that is not a binary tree rooted at node 0")
        local = {node: i for i, node in enumerate(order)}
        cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32)[order]
        hess = np.asarray(tree["sum_hessian"], dtype=np.float64).astype(np.float32)[order]
        self.n = n
        self.is_leaf = [left[o] == -1 for o in order]
        self.left = [-1 if left[o] == -1 else local[left[o]] for o in order]
        self.right = [-1 if left[o] == -1 else local[right[o]] for o in order]
        self.feature = [int(tree["split_indices"][o]) for o in order]
        self.default_left = [bool(tree["default_left"][o]) for o in order]
        self.threshold = cond  # a leaf's value for leaves
        self.parent = [-1] * n
        # per node: the distinct features of its root path (bit b = b-th new one) and their z products
        self.path_features: list[list[int]] = [[] for _ in range(n)]
        self.path_z: list[list[float]] = [[] for _ in range(n)]
        self.bit = [-1] * n
        for i in range(n):
            if self.is_leaf[i]:
                if len(self.path_features[i]) > MAX_PATH_FEATURES:
                    raise Unsupported(f"a path that tests more than {MAX_PATH_FEATURES} distinct features")
                continue
            f = self.feature[i]
            if not 0 <= f < n_features:
                raise Unsupported(f"a split on feature {f}, outside the model's {n_features}")
            if not hess[i] > 0:
                raise Unsupported("a split node with zero cover")
            feats = self.path_features[i]
            self.bit[i] = feats.index(f) if f in feats else len(feats)
            for child in (self.left[i], self.right[i]):
                self.parent[child] = i
                ratio = float(np.float32(hess[child]) / np.float32(hess[i]))  # XGBoost's float32 division
                cf, cz = list(feats), list(self.path_z[i])
                if self.bit[i] == len(cf):
                    cf.append(f)
                    cz.append(ratio)
                else:
                    cz[self.bit[i]] *= ratio
                self.path_features[child], self.path_z[child] = cf, cz
        self.internal_below = [0] * n  # internal nodes in the subtree
        for i in range(n - 1, -1, -1):
            if not self.is_leaf[i]:
                self.internal_below[i] = 1 + self.internal_below[self.left[i]] + self.internal_below[self.right[i]]

    def subtree(self, root: int) -> list[int]:
        nodes = [root]
        for i in nodes:
            if not self.is_leaf[i]:
                nodes += [self.left[i], self.right[i]]
        return sorted(nodes)  # breadth-first = local id order

    def group_roots(self, group_bits: int) -> tuple[list[int], list[int]]:
        """(upper internal nodes, group roots): a group is the highest subtree whose prefix bits plus
        internal nodes fit in `group_bits`, or a single leaf."""
        upper, roots, stack = [], [], [0]
        while stack:
            i = stack.pop()
            if self.is_leaf[i] or len(self.path_features[i]) + self.internal_below[i] <= group_bits:
                roots.append(i)
            else:
                upper.append(i)
                stack += [self.right[i], self.left[i]]
        return sorted(upper), sorted(roots)


def _groups(trees: list[_Tree], group_bits: int):
    """Every tree's upper nodes and groups, with each group's table size (0 = computed on the fly)."""
    out = []
    for tree in trees:
        upper, roots = tree.group_roots(group_bits)
        groups = []
        for root in roots:
            prefix = len(tree.path_features[root])
            nodes = tree.subtree(root)
            decisions = [i for i in nodes if not tree.is_leaf[i]]
            slots = list(tree.path_features[root])
            for i in decisions:
                if tree.feature[i] not in slots:
                    slots.append(tree.feature[i])
            bits = prefix + len(decisions)
            size = (1 << bits) * len(slots) if bits <= MAX_TABLE_BITS else 0
            groups.append((root, prefix, nodes, decisions, slots, bits, size))
        out.append((upper, groups))
    return out


def _layout(trees: list[_Tree]):
    """The largest group size whose tables fit the budget (then leaves over the budget go on the fly)."""
    budget = TABLE_BUDGET_BYTES // 8
    for group_bits in range(GROUP_BITS, -1, -1):
        layout = _groups(trees, group_bits)
        total = sum(g[6] for _, groups in layout for g in groups)
        if total <= budget or group_bits == 0:
            break
    if total > budget:  # single leaves only: drop the largest tables until the rest fits
        sizes = sorted(((g[6], t, k) for t, (_, groups) in enumerate(layout) for k, g in enumerate(groups)),
                       reverse=True)
        for size, t, k in sizes:
            if total <= budget:
                break
            layout[t][1][k] = layout[t][1][k][:6] + (0,)
            total -= size
    return group_bits, layout


def build(booster: xgb.Booster) -> TreeShapModel:
    """Parse the booster's JSON and tabulate every group; raises Unsupported for what it cannot do."""
    learner = orjson.loads(bytes(booster.save_raw("json")))["learner"]
    params = learner["learner_model_param"]
    gb = learner["gradient_booster"]
    if gb.get("name") != "gbtree":
        raise Unsupported(f"booster {gb.get('name')!r} (only gbtree)")
    if int(params.get("num_class", 0)) > 1 or int(params.get("num_target", 1)) > 1:
        raise Unsupported("multi-class / multi-target model")
    model = gb["model"]
    if any(int(g) != 0 for g in model.get("tree_info", [])):
        raise Unsupported("trees for more than one output group")
    n_features = int(params["num_feature"])
    trees = [_Tree(t, n_features) for t in model["trees"]]
    group_bits, layout = _layout(trees)

    # leaf tables (2^p x p) of the leaves of tabulated groups, then each group's table from them
    leaf_rows = []  # (tree, leaf)
    for t, (_, groups) in enumerate(layout):
        for _root, _prefix, nodes, _dec, _slots, _bits, size in groups:
            if size:
                leaf_rows += [(t, i) for i in nodes if trees[t].is_leaf[i]]
    max_p = max([len(trees[t].path_features[i]) for t, i in leaf_rows] + [1])
    leaf_p = np.asarray([len(trees[t].path_features[i]) for t, i in leaf_rows], dtype=np.int32)
    leaf_z = np.ones((len(leaf_rows), max_p))
    leaf_value = np.zeros(len(leaf_rows))
    for row, (t, i) in enumerate(leaf_rows):
        leaf_z[row, :leaf_p[row]] = trees[t].path_z[i]
        leaf_value[row] = trees[t].threshold[i]
    leaf_offset = np.zeros(len(leaf_rows) + 1, dtype=np.int64)
    np.cumsum((np.left_shift(1, leaf_p.astype(np.int64))) * leaf_p, out=leaf_offset[1:])
    leaf_table = np.zeros(max(int(leaf_offset[-1]), 1))
    _fill_tables(leaf_p, leaf_z, leaf_value, leaf_offset, _WEIGHTS, leaf_table)
    leaf_index = {key: row for row, key in enumerate(leaf_rows)}

    f = {name: [] for name in _KERNEL_FIELDS}
    f["tree_upper"], f["tree_groups"] = [0], [0]
    f["group_slots"], f["group_decisions"] = [0], [0]
    # what _fill_group_tables needs, per tabulated group / its leaves / their steps inside the group
    g = {name: [] for name in ("offset", "prefix", "bits", "width", "leaves", "leaf_row", "leaf_steps",
                               "leaf_cols", "step_pos", "step_left", "step_bit", "col")}
    g["leaves"], g["leaf_steps"], g["leaf_cols"] = [0], [0], [0]
    used, otf_z, otf_value = 0, [], []
    for t, (upper, groups) in enumerate(layout):
        tree = trees[t]
        for i in upper:
            f["up_node"].append(i)
            f["up_feature"].append(tree.feature[i])
            f["up_threshold"].append(tree.threshold[i])
            f["up_default_left"].append(tree.default_left[i])
            f["up_left"].append(tree.left[i])
            f["up_right"].append(tree.right[i])
            f["up_bit"].append(tree.bit[i])
        f["tree_upper"].append(len(f["up_node"]))
        for root, prefix, nodes, decisions, slots, bits, size in groups:
            f["group_root"].append(root)
            f["group_prefix"].append(prefix)
            f["slot_feature"] += slots
            f["group_slots"].append(len(f["slot_feature"]))
            for i in decisions:
                f["dec_feature"].append(tree.feature[i])
                f["dec_threshold"].append(tree.threshold[i])
                f["dec_default_left"].append(tree.default_left[i])
            f["group_decisions"].append(len(f["dec_feature"]))
            if size:
                f["group_offset"].append(used)
                f["group_leaf"].append(-1)
                g["offset"].append(used)
                g["prefix"].append(prefix)
                g["bits"].append(bits)
                g["width"].append(len(slots))
                slot_of = {feature: s for s, feature in enumerate(slots)}
                dec_pos = {i: prefix + j for j, i in enumerate(decisions)}
                for i in nodes:
                    if not tree.is_leaf[i]:
                        continue
                    g["leaf_row"].append(leaf_index[(t, i)])
                    child = i
                    while child != root:  # the group's decisions on the leaf's path
                        parent = tree.parent[child]
                        g["step_pos"].append(dec_pos[parent])
                        g["step_left"].append(child == tree.left[parent])
                        g["step_bit"].append(tree.bit[parent])
                        child = parent
                    g["leaf_steps"].append(len(g["step_pos"]))
                    g["col"] += [slot_of[feature] for feature in tree.path_features[i]]
                    g["leaf_cols"].append(len(g["col"]))
                g["leaves"].append(len(g["leaf_row"]))
                used += size
            else:  # a single leaf, computed per row
                f["group_offset"].append(-1)
                f["group_leaf"].append(len(otf_value))
                otf_z.append(tree.path_z[root])
                otf_value.append(float(tree.threshold[root]))
        f["tree_groups"].append(len(f["group_root"]))
    f["table"] = np.zeros(max(used, 1))
    ints = {name: np.asarray(values, dtype=np.int64) for name, values in g.items()}
    _fill_group_tables(ints["offset"], ints["prefix"], ints["bits"], ints["width"], ints["leaves"],
                       ints["leaf_row"], ints["leaf_steps"], ints["leaf_cols"], ints["step_pos"], ints["step_left"],
                       ints["step_bit"], ints["col"], leaf_p.astype(np.int64), leaf_offset, leaf_table, f["table"])
    max_otf = max([len(z) for z in otf_z] + [1])
    f["otf_z"] = np.ones((max(len(otf_z), 1), max_otf))
    for row, z in enumerate(otf_z):
        f["otf_z"][row, :len(z)] = z
    f["otf_value"] = np.asarray(otf_value + [0.0])
    f["max_nodes"] = [max([tree.n for tree in trees] + [1])]
    dtypes = {"tree_upper": np.int64, "tree_groups": np.int64, "group_slots": np.int64,
              "group_decisions": np.int64, "group_offset": np.int64, "max_nodes": np.int64,
              "up_threshold": np.float32, "dec_threshold": np.float32,
              "up_default_left": np.bool_, "dec_default_left": np.bool_,
              "table": np.float64, "otf_z": np.float64, "otf_value": np.float64}
    arrays = tuple(np.ascontiguousarray(np.asarray(f[name], dtype=dtypes.get(name, np.int32)))
                   for name in _KERNEL_FIELDS)
    return TreeShapModel(n_features=n_features, bias=_bias(booster, n_features), group_bits=group_bits,
                         arrays=arrays)


def _bias(booster: xgb.Booster, n_features: int) -> np.float32:
    """XGBoost's own bias column (base margin + Σ tree means): the same for every row."""
    row = xgb.DMatrix(np.full((1, n_features), np.nan, dtype=np.float32), feature_names=booster.feature_names,
                      feature_types=booster.feature_types, nthread=1)
    return np.float32(booster.predict(row, pred_contribs=True)[0, -1])


# ---- compiled kernels ------------------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def _leaf_row(leaf_z, leaf, p, value, q, weights, out, o0, c, d):
    """out[o0 + k] = the leaf's SHAP value for its k-th path feature when the row meets the features in q."""
    c[0] = 1.0
    m = 0
    rest = 1.0  # Π z over the path features the row does not meet
    for f in range(p):
        zf = leaf_z[leaf, f]
        if (q >> f) & 1:
            c[m + 1] = c[m]
            for j in range(m, 0, -1):
                c[j] = c[j] * zf + c[j - 1]
            c[0] = c[0] * zf
            m += 1
        else:
            rest *= zf
    full = 0.0
    for j in range(m + 1):
        full += weights[p, j] * c[j]
    for k in range(p):
        if (q >> k) & 1:
            zk = leaf_z[leaf, k]
            # d = c / (z_k + t), degree m - 1, from the top
            d[m - 1] = c[m]
            for j in range(m - 1, 0, -1):
                d[j - 1] = c[j] - zk * d[j]
            s = 0.0
            for j in range(m):
                s += weights[p, j] * d[j]
            out[o0 + k] = value * (1.0 - zk) * rest * s
        else:
            out[o0 + k] = -value * rest * full


@njit(nogil=True, cache=True)
def _fill_tables(leaf_p, leaf_z, leaf_value, leaf_offset, weights, table):
    maxp = leaf_z.shape[1]
    c = np.empty(maxp + 2)
    d = np.empty(maxp + 2)
    for leaf in range(leaf_p.shape[0]):
        p = leaf_p[leaf]
        for q in range(1 << p):
            _leaf_row(leaf_z, leaf, p, leaf_value[leaf], q, weights, table, leaf_offset[leaf] + q * p, c, d)


@njit(nogil=True, cache=True)
def _fill_group_tables(offset, prefix, bits, width, leaves, leaf_row, leaf_steps, leaf_cols, step_pos, step_left,
                       step_bit, col, leaf_p, leaf_offset, leaf_table, table):
    """Each group's row `index` (prefix mask bits | decision j at bit prefix + j, 1 = the row goes left) is
    the sum over its leaves of the leaf's table row for the mask those decisions give it."""
    for grp in range(offset.shape[0]):
        low = (1 << prefix[grp]) - 1
        w = width[grp]
        for index in range(1 << bits[grp]):
            base = offset[grp] + index * w
            for leaf in range(leaves[grp], leaves[grp + 1]):
                mask = (index & low) | ~low
                for s in range(leaf_steps[leaf], leaf_steps[leaf + 1]):
                    went_left = (index >> step_pos[s]) & 1
                    met = went_left if step_left[s] else 1 - went_left
                    if met == 0:
                        mask &= ~(1 << step_bit[s])
                row = leaf_row[leaf]
                p = leaf_p[row]
                q = mask & ((1 << p) - 1)
                src = leaf_offset[row] + q * p
                c0 = leaf_cols[leaf]
                for k in range(p):
                    table[base + col[c0 + k]] += leaf_table[src + k]


@njit(nogil=True, cache=True)
def _block(X, r0, r1, model, weights, out):
    """Rows r0..r1 of X: the rows are the inner loop of every step (vectorized), each row's sums in the
    same order whatever the block. No array views in the loops (each would be an atomic reference count)."""
    (tree_upper, tree_groups, up_node, up_feature, up_threshold, up_default_left, up_left, up_right, up_bit,
     group_root, group_prefix, group_slots, group_decisions, group_offset, group_leaf, dec_feature, dec_threshold,
     dec_default_left, slot_feature, table, otf_z, otf_value, max_nodes) = model
    nb = r1 - r0
    n_features = X.shape[1]
    xt = np.empty((n_features, nb), dtype=np.float32)
    for r in range(nb):
        for f in range(n_features):
            xt[f, r] = X[r0 + r, f]
    phi = np.zeros((n_features, nb))
    mask = np.empty((max_nodes[0], nb), dtype=np.int32)
    index = np.empty(nb, dtype=np.int32)
    base = np.empty(nb, dtype=np.int64)
    maxp = otf_z.shape[1]
    buf = np.empty(maxp)
    c = np.empty(maxp + 2)
    d = np.empty(maxp + 2)
    for t in range(tree_upper.shape[0] - 1):
        for r in range(nb):
            mask[0, r] = -1  # every bit: the row meets every condition so far
        for i in range(tree_upper[t], tree_upper[t + 1]):
            f = up_feature[i]
            threshold = up_threshold[i]
            default_left = up_default_left[i]
            bit = np.int32(1) << up_bit[i]
            node = up_node[i]
            lc = up_left[i]
            rc = up_right[i]
            for r in range(nb):
                x = xt[f, r]
                # branch-free: NaN compares false, so a missing value goes left only by default
                left = np.int32((x < threshold) | ((x != x) & default_left))
                m = mask[node, r]
                mask[lc, r] = m & ~(bit * (1 - left))
                mask[rc, r] = m & ~(bit * left)
        for g in range(tree_groups[t], tree_groups[t + 1]):
            prefix = group_prefix[g]
            root = group_root[g]
            low = np.int32((1 << prefix) - 1)
            for r in range(nb):
                index[r] = mask[root, r] & low
            pos = prefix
            for i in range(group_decisions[g], group_decisions[g + 1]):
                f = dec_feature[i]
                threshold = dec_threshold[i]
                default_left = dec_default_left[i]
                for r in range(nb):
                    x = xt[f, r]
                    index[r] |= np.int32((x < threshold) | ((x != x) & default_left)) << pos
                pos += 1
            s0 = group_slots[g]
            width = group_slots[g + 1] - s0
            off = group_offset[g]
            if off >= 0:
                for r in range(nb):
                    base[r] = off + index[r] * width
                for s in range(width):
                    f = slot_feature[s0 + s]
                    for r in range(nb):
                        phi[f, r] += table[base[r] + s]
            elif width > 0:
                leaf = group_leaf[g]
                for r in range(nb):
                    _leaf_row(otf_z, leaf, width, otf_value[leaf], index[r], weights, buf, 0, c, d)
                    for k in range(width):
                        phi[slot_feature[s0 + k], r] += buf[k]
    for r in range(nb):
        for f in range(n_features):
            out[r0 + r, f] = np.float32(phi[f, r])


@njit(nogil=True, cache=True)
def _contribs_serial(X, model, weights, out):
    n = X.shape[0]
    for b in range((n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        _block(X, b * BLOCK_ROWS, min(n, (b + 1) * BLOCK_ROWS), model, weights, out)


@njit(nogil=True, cache=True)
def _top_k(contribs, order, picked):
    k = order.shape[1]
    n_features = contribs.shape[1]
    best = np.empty(k, dtype=np.float32)
    for r in range(contribs.shape[0]):
        filled = 0
        for f in range(n_features):
            a = abs(contribs[r, f])
            if filled == k and not a > best[k - 1]:
                continue
            # insert after every kept value >= a (earlier columns win ties)
            pos = filled if filled < k else k - 1
            while pos > 0 and best[pos - 1] < a:
                best[pos] = best[pos - 1]
                order[r, pos] = order[r, pos - 1]
                pos -= 1
            best[pos] = a
            order[r, pos] = f
            if filled < k:
                filled += 1
        for j in range(k):
            picked[r, j] = contribs[r, order[r, j]]

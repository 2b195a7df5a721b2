"""Minimum-cost assignment with a cost limit, in numpy (what lap.lapjv gives ByteTrack).

Hand-written because the runtime takes no scipy or lap: a Hungarian solver (shortest augmenting
paths with potentials), with the pairs that compete with nothing matched at once.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def linear_assignment(cost: np.ndarray, limit: float) -> Tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the pairs of a minimum-cost assignment where only pairs costing less
    than `limit` may be matched and leaving a row or column unmatched costs ``limit / 2``
    (lap.lapjv's ``extend_cost=True, cost_limit=limit``, which ByteTrack uses).

    Pairs that are each other's only candidate are matched at once (vectorized); the rest, where
    candidates compete, go to a Hungarian solver (shortest augmenting paths with potentials; a
    Python loop over rows, numpy over columns). Clipping every cost at `limit` and matching all
    rows of the smaller side gives the same optimum as the extended square problem.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D matrix, not of shape {cost.shape}")
    if cost.size == 0:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    feasible = cost < limit  # NaN compares False: never matched
    row_degree = feasible.sum(axis=1)
    col_degree = feasible.sum(axis=0)
    first = feasible.argmax(axis=1)
    alone = (row_degree == 1) & (col_degree[first] == 1)
    rows = alone.nonzero()[0]
    cols = first[alone]
    rest_rows = ((row_degree > 0) & ~alone).nonzero()[0]
    if not rest_rows.shape[0]:  # (most calls: every pair alone, rows already in order)
        return rows, cols.astype(np.int64, copy=False)
    taken = np.zeros(cost.shape[1], bool)
    taken[cols] = True
    rest_cols = ((col_degree > 0) & ~taken).nonzero()[0]
    sub = cost.take(rest_rows, 0).take(rest_cols, 1)
    sub = np.minimum(np.where(np.isnan(sub), limit, sub), limit)
    if sub.shape[0] <= sub.shape[1]:
        r, c = np.arange(sub.shape[0]), _hungarian(sub)
    else:
        c, r = np.arange(sub.shape[1]), _hungarian(sub.T)
    good = sub[r, c] < limit
    rows = np.concatenate([rows, rest_rows[r[good]]])
    cols = np.concatenate([cols, rest_cols[c[good]]])
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def _hungarian(a: np.ndarray) -> np.ndarray:
    """Column of each row of the minimum-cost assignment of an (n, m) matrix with n <= m, finite."""
    n, m = a.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, np.int64)  # p[j]: the row (1-based) on column j (1-based); 0: free
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            current = a[i0 - 1] - u[i0] - v[1:]
            better = ~used[1:] & (current < minv[1:])
            minv[1:][better] = current[better]
            way[1:][better] = j0
            masked = np.where(used[1:], np.inf, minv[1:])
            j1 = int(masked.argmin()) + 1
            delta = masked[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    assignment = np.zeros(n, np.int64)
    assignment[p[1:][p[1:] > 0] - 1] = (p[1:] > 0).nonzero()[0]
    return assignment


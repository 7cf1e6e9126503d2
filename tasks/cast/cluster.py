"""Tracks into characters: average-linkage clustering with cannot-link constraints.

Two tracks of one shot are two characters (one drawing never shows a character
twice), so clusters that share a shot never merge. Otherwise the two clusters whose
members are closest on average merge, until the closest pair is farther apart than
``threshold``. Average linkage rather than single: one odd drawing (a character in
front of a same-coloured wall) does not chain two characters together.

*Anchors* keep identities stable: items with the same anchor start as one cluster
and clusters of two different anchors never merge, so re-clustering after one shot
was re-run moves only that shot's tracks (they join an anchored cluster or make a
new one) and leaves every other assignment as it was. Enrolled references are items
too: each anchored by its name, in a shot of its own.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clusters:
    labels: list[int]
    """Cluster per item, 0.. in order of each cluster's first item."""
    confidence: list[float]
    """Per item, 0..1: how much closer it is to its own cluster than to the next one."""
    merge_distance: list[float]
    """Per cluster, the largest average distance at which it took in a member (0 for one item)."""


def cluster(
    distance: np.ndarray,
    groups: Sequence[int],
    threshold: float,
    anchors: Sequence[Hashable | None] | None = None,
) -> Clusters:
    """Cluster ``n`` items given their (n, n) ``distance``; items of one group (shot)
    never share a cluster, nor do items of different ``anchors`` (None: free).
    Deterministic: ties break toward the lowest indices."""
    n = len(groups)
    anchors = list(anchors) if anchors is not None else [None] * n
    # initial clusters: one per anchor, one per free item
    members: list[list[int]] = []
    by_anchor: dict[Hashable, int] = {}
    for i, a in enumerate(anchors):
        if a is None:
            members.append([i])
        elif a in by_anchor:
            members[by_anchor[a]].append(i)
        else:
            by_anchor[a] = len(members)
            members.append([i])
    m = len(members)
    d = np.asarray(distance, np.float64)
    total = np.array([[d[np.ix_(a, b)].sum() for b in members] for a in members]).reshape(m, m)
    size = np.array([len(a) for a in members], np.float64)
    group_sets = [{groups[i] for i in a} for a in members]
    anchored = np.array([anchors[a[0]] is not None for a in members])
    blocked = np.array([[bool(group_sets[i] & group_sets[j]) for j in range(m)] for i in range(m)]).reshape(m, m)
    blocked |= anchored[:, None] & anchored[None, :]
    np.fill_diagonal(blocked, True)
    alive = np.ones(m, bool)
    merged_at = np.zeros(m)
    while m > 1:
        average = total / np.outer(size, size)
        average[blocked | ~alive[:, None] | ~alive[None, :]] = np.inf
        k = int(np.argmin(average))
        i, j = divmod(k, m)
        if average[i, j] > threshold:
            break
        i, j = min(i, j), max(i, j)
        merged_at[i] = max(merged_at[i], merged_at[j], average[i, j])
        members[i] += members[j]
        total[i, :] += total[j, :]
        total[:, i] = total[i, :]
        total[i, i] = d[np.ix_(members[i], members[i])].sum()
        size[i] += size[j]
        blocked[i, :] |= blocked[j, :]
        blocked[:, i] = blocked[i, :]
        blocked[i, i] = True
        alive[j] = False
    live = sorted((min(members[c]), c) for c in range(m) if alive[c])
    labels = [0] * n
    for label, (_, c) in enumerate(live):
        for i in members[c]:
            labels[i] = label
    return Clusters(labels, _confidence(d, labels, groups, threshold), [float(merged_at[c]) for _, c in live])


def _confidence(d: np.ndarray, labels: list[int], groups: Sequence[int], threshold: float) -> list[float]:
    """Per item, the larger of two: 1 - (mean distance to its own cluster's other
    members) / (mean distance to the nearest cluster it could have joined: one
    without a track of its shot), where an item alone in its cluster uses
    ``threshold`` for the first (it was at least that far from the rest); and
    1 - (that mean distance to its own) / ``threshold``, how well inside its cluster
    it sits. The second keeps a track that is close to its character although a
    duplicate track of that character (a detector's second box on it) is as close."""
    labels_a, groups_a = np.asarray(labels), np.asarray(groups)
    k = int(labels_a.max()) + 1 if len(labels) else 0
    shots_of = [set(groups_a[labels_a == c].tolist()) for c in range(k)]
    out = []
    for i, own in enumerate(labels):
        mates = (labels_a == own).sum() - 1
        inside = d[i, labels_a == own].sum() / mates if mates else threshold
        others = [d[i, labels_a == c].mean() for c in range(k) if c != own and groups[i] not in shots_of[c]]
        nearest = min(others, default=np.inf)
        ratio = float(np.clip(1.0 - inside / nearest, 0.0, 1.0)) if nearest > 0 else 0.0
        within = float(np.clip(1.0 - inside / threshold, 0.0, 1.0)) if mates else 0.0
        out.append(max(ratio, within))
    return out

"""Near-duplicate search over 64-bit perceptual hashes that scales to millions: multi-index
hashing (Norouzi et al., CVPR 2012), never all pairs.

The 64 bits are cut into ``m`` bands. By the pigeonhole principle two hashes within Hamming
distance ``d`` agree in some band up to ``d // m`` bits, so each item is looked up in each band's
sorted table under every variant of its band value with at most ``d // m`` bits flipped; only
those candidates get their full distance measured. With bands about log2(N) bits wide a lookup
finds O(1) candidates, so the search costs O(N log N) (the sort and the binary searches) instead
of the N x N matrix that popular tools build and that stalls near 100k images.

Clusters are the connected components of the near-duplicate graph; each keeps one member (the
highest priority, then the first) and names it in the others' verdicts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

BITS = 64
DIRECT_BITS = 24  # bands up to this wide are looked up in a direct table of 2**bits offsets
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance between uint64 arrays of the same shape."""
    x = np.ascontiguousarray(np.bitwise_xor(a, b), dtype=np.uint64)
    return _POPCOUNT[x.view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.int64)


def hash_to_int(bits: np.ndarray) -> int:
    """An 8x8 boolean hash (imagehash's ``ImageHash.hash``) -> its 64-bit integer."""
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).reshape(-1)).tobytes(), "big")


def band_count(n: int, radius: int) -> int:
    """Bands about log2(n) bits wide (so a band value matches O(1) items by chance), at most
    radius + 1 of them (then every band is matched exactly)."""
    width = max(8, math.ceil(math.log2(max(n, 2))))
    return max(1, min(radius + 1, BITS // width))


def _bands(m: int) -> list[tuple[int, int]]:
    """(shift, width) of m bands covering the 64 bits."""
    edges = np.linspace(0, BITS, m + 1).round().astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def _flip_masks(width: int, flips: int) -> np.ndarray:
    """Every mask of ``width`` bits with at most ``flips`` bits set (0 included)."""
    masks = [0]
    for k in range(1, flips + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(width), k)]
    return np.array(masks, dtype=np.uint64)


def _bucket_starts(values: np.ndarray, width: int) -> np.ndarray:
    """Where each band value's run starts in the sorted table (a counting sort's offsets)."""
    starts = np.zeros((1 << width) + 1, dtype=np.int64)
    np.cumsum(np.bincount(values.astype(np.int64), minlength=1 << width), out=starts[1:])
    return starts


def near_pairs(hashes: np.ndarray, radius: int, chunk: int = 1 << 20) -> np.ndarray:
    """All pairs (i, j), i < j, with hamming(hashes[i], hashes[j]) <= radius, as an (P, 2) array."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    m = band_count(n, radius)
    found = []
    for shift, width in _bands(m):
        values = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(values, kind="stable")
        bucket = _bucket_starts(values, width) if width <= DIRECT_BITS else None
        table = values[order]
        masks = _flip_masks(width, radius // m)
        step = max(1, chunk // len(masks))
        for start in range(0, n, step):
            query = np.arange(start, min(n, start + step))
            keys = (values[query, None] ^ masks[None, :]).reshape(-1)
            if bucket is not None:  # one read per lookup instead of a binary search's ~log2(n) cache misses
                index = keys.astype(np.int64)
                lo = bucket[index]
                hits = bucket[index + 1] - lo
            else:
                lo = np.searchsorted(table, keys, "left")
                hits = np.searchsorted(table, keys, "right") - lo
            if not hits.any():
                continue
            owner = np.repeat(np.repeat(query, len(masks)), hits)
            offsets = np.arange(hits.sum()) - np.repeat(np.cumsum(hits) - hits, hits)
            other = order[np.repeat(lo, hits) + offsets]
            keep = other > owner
            owner, other = owner[keep], other[keep]
            close = hamming(hashes[owner], hashes[other]) <= radius
            found.append(np.stack([owner[close], other[close]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


@dataclass(frozen=True)
class Clusters:
    """Per item, the index of the item its cluster keeps (itself when kept)."""
    kept: np.ndarray

    def duplicates(self) -> dict[int, int]:
        """duplicate index -> kept index."""
        return {int(i): int(k) for i, k in enumerate(self.kept) if k != i}


def cluster(hashes: np.ndarray, radius: int, priority: np.ndarray | None = None) -> Clusters:
    """Group items whose hashes lie within ``radius`` bits (transitively); each cluster keeps
    its highest-``priority`` member (the first on ties)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    pairs = near_pairs(hashes, radius)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    rank = np.zeros(n) if priority is None else -np.asarray(priority, dtype=float)
    order = np.lexsort((np.arange(n), rank, label))  # by cluster, then best first
    first = np.ones(n, dtype=bool)
    first[1:] = label[order][1:] != label[order][:-1]
    leader = np.empty(n, dtype=np.int64)
    leader[label[order][first]] = order[first]
    return Clusters(leader[label])

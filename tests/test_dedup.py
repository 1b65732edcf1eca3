"""curate.dedup: the multi-index near-duplicate search finds exactly the pairs a brute-force
scan finds, and clusters keep one member each."""
import numpy as np
import pytest

from curate.dedup import band_count, cluster, hamming, hash_to_int, near_pairs


def planted(n: int, copies: int, max_flips: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for i in range(copies):
        flips = rng.choice(64, rng.integers(0, max_flips + 1), replace=False)
        hashes[n - 1 - i] = hashes[i] ^ np.uint64(sum(1 << int(b) for b in flips))
    return hashes


def brute_force(hashes: np.ndarray, radius: int) -> set:
    i, j = np.triu_indices(len(hashes), 1)
    close = hamming(hashes[i], hashes[j]) <= radius
    return set(zip(i[close].tolist(), j[close].tolist()))


@pytest.mark.parametrize("radius", [0, 3, 5, 9])
def test_near_pairs_match_brute_force(radius):
    hashes = planted(1500, 200, radius + 2)
    assert {tuple(p) for p in near_pairs(hashes, radius).tolist()} == brute_force(hashes, radius)


def test_bands_follow_the_collection_size():
    assert band_count(10_000, 5) == 4 and band_count(1_000_000, 5) == 3 and band_count(100, 0) == 1


def test_clusters_keep_the_highest_priority_member():
    base = np.uint64(0x0123456789ABCDEF)
    hashes = np.array([base, base ^ np.uint64(1), base ^ np.uint64(3), ~base], dtype=np.uint64)
    clusters = cluster(hashes, 2, priority=np.array([1, 5, 1, 1]))
    assert clusters.kept.tolist() == [1, 1, 1, 3]
    assert clusters.duplicates() == {0: 1, 2: 1}


def test_hash_to_int_reads_bits_row_major():
    bits = np.zeros((8, 8), bool)
    bits[0, 0] = bits[7, 7] = True
    assert hash_to_int(bits) == (1 << 63) | 1

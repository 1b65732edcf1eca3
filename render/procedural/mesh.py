"""Skinned mesh primitives: closed tubes and ellipsoids with UVs and up to 4 joint weights per
vertex, accumulated into one primitive, plus the vertex normals and the blend of weights across
a joint that the body's parts share."""
from __future__ import annotations

import numpy as np

from render.procedural.atlas import to_region
from render.skeleton import JOINT_INDEX


class Mesh:
    """Accumulates skinned, UV-mapped parts into one primitive."""

    def __init__(self):
        self.positions, self.uvs, self.joints, self.weights, self.faces = [], [], [], [], []
        self.count = 0

    def add(self, positions, uvs, influences, faces) -> slice:
        """influences: per vertex, a list of (joint name, weight)."""
        start = self.count
        self.positions.append(np.asarray(positions, np.float32))
        self.uvs.append(np.asarray(uvs, np.float32))
        joints = np.zeros((len(positions), 4), np.uint8)
        weights = np.zeros((len(positions), 4), np.float32)
        for i, vertex in enumerate(influences):
            vertex = sorted(((w, j) for j, w in vertex if w > 1e-4), reverse=True)[:4]
            total = sum(w for w, _ in vertex)
            for slot, (w, j) in enumerate(vertex):
                joints[i, slot], weights[i, slot] = JOINT_INDEX[j], w / total
        self.joints.append(joints)
        self.weights.append(weights)
        self.faces.append(np.asarray(faces, np.int64) + start)
        self.count += len(positions)
        return slice(start, self.count)

    def tube(self, start, end, radii, influences, region: str, *, rings: int = 10, segments: int = 16,
             across=None, roundness: float = 4.0) -> slice:
        """A closed tube from ``start`` to ``end``; ``radii(t) -> (a, b)`` are the half-widths along
        ``across`` and the third axis; ``influences(t)`` gives the skin weights along the tube."""
        start, end = np.asarray(start, float), np.asarray(end, float)
        axis = end - start
        length = np.linalg.norm(axis)
        axis /= length
        u = np.asarray(across if across is not None else ((1, 0, 0) if abs(axis[0]) < 0.7 else (0, 0, 1)), float)
        u = u - axis * (u @ axis)
        u /= np.linalg.norm(u)
        v = np.cross(axis, u)
        ts = np.linspace(0, 1, rings + 2)[1:-1]
        theta = np.linspace(0, 2 * np.pi, segments + 1)
        positions, uvs, infl = [], [], []
        for t in ts:
            a, b = radii(t)
            cap = (1 - abs(2 * t - 1) ** roundness) ** (1 / roundness)
            centre = start + axis * length * t
            ring = centre + cap * (a * np.cos(theta)[:, None] * u + b * np.sin(theta)[:, None] * v)
            positions.append(ring)
            uvs.append(np.stack([theta / (2 * np.pi), np.full_like(theta, t)], 1))
            infl += [influences(t)] * len(theta)
        positions.append(np.stack([start, end]))
        uvs.append(np.array([[0.5, 0.0], [0.5, 1.0]]))
        infl += [influences(0.0), influences(1.0)]
        n = segments + 1
        faces = []
        for r in range(rings - 1):
            for s in range(segments):
                a, b, c, d = r * n + s, r * n + s + 1, (r + 1) * n + s, (r + 1) * n + s + 1
                faces += [(a, b, c), (b, d, c)]  # counter-clockwise seen from outside: normals point out
        pole0, pole1 = rings * n, rings * n + 1
        last = (rings - 1) * n
        faces += [(pole0, s + 1, s) for s in range(segments)]
        faces += [(pole1, last + s, last + s + 1) for s in range(segments)]
        uv = to_region(np.vstack(uvs), region)
        return self.add(np.vstack(positions), uv, infl, faces)

    def ellipsoid(self, centre, radii, joint_weights, region: str, *, rings: int = 8, segments: int = 12) -> slice:
        """An axis-aligned ellipsoid with half-axes ``radii`` (x, y, z), rigid on ``joint_weights``."""
        centre = np.asarray(centre, float)
        rx, ry, rz = radii
        return self.tube(centre - (0, ry, 0), centre + (0, ry, 0), lambda t: (rx, rz), lambda t: joint_weights,
                         region, rings=rings, segments=segments, across=(1, 0, 0), roundness=2.0)

    def arrays(self) -> dict[str, np.ndarray]:
        positions = np.vstack(self.positions).astype(np.float32)
        faces = np.vstack(self.faces)
        return {"positions": positions, "normals": vertex_normals(positions, faces),
                "uvs": np.vstack(self.uvs), "joints": np.vstack(self.joints), "weights": np.vstack(self.weights),
                "faces": faces.astype(np.uint32)}


def vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, unit length (an arbitrary unit vector where undefined)."""
    tri = positions[faces].astype(np.float64)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros((len(positions), 3))
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.where(length > 1e-12, normals / np.maximum(length, 1e-12), (0.0, 1.0, 0.0))
    return normals.astype(np.float32)


def blend(prev: str | None, own: str, nxt: str | None, zone: float = 0.15):
    """Skin weights along a segment: half-and-half with the neighbour at each end."""
    def weights(t: float):
        w_prev = max(0.0, 0.5 - t / (2 * zone)) if prev else 0.0
        w_next = max(0.0, 0.5 - (1 - t) / (2 * zone)) if nxt else 0.0
        return [(own, 1 - w_prev - w_next)] + ([(prev, w_prev)] if prev else []) + ([(nxt, w_next)] if nxt else [])
    return weights

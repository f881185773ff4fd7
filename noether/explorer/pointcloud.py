"""A car-like sample point cloud (surface plus surrounding volume), generated procedurally, shipped in the package."""

import io
from pathlib import Path

import numpy as np

from noether.explorer.problems import ExplorerError, Problem
from noether.explorer.resources import asset_path

SAMPLE_PATH = asset_path("sample_point_cloud.npz")
SAMPLE_POINTS = 16384
"""Points per domain in the shipped sample."""

# Rounded boxes (superellipsoids): centre, half extents, exponent. Units are metres.
_BODY = (np.array([0.0, 0.0, 0.62]), np.array([2.25, 0.9, 0.36]), 4.0)
_CABIN = (np.array([-0.25, 0.0, 1.0]), np.array([1.25, 0.76, 0.36]), 3.0)
_WHEELS = [np.array([x, y, 0.33]) for x in (-1.45, 1.45) for y in (-0.82, 0.82)]
_WHEEL_RADIUS, _WHEEL_WIDTH = 0.33, 0.22
_VOLUME_BOX = (np.array([-4.0, -2.5, 0.0]), np.array([9.0, 2.5, 3.0]))


def _superellipsoid_surface(
    rng: np.random.Generator, n: int, shape: tuple[np.ndarray, np.ndarray, float]
) -> np.ndarray:
    centre, half, power = shape
    directions = rng.normal(size=(n, 3))
    scale = (np.abs(directions / half) ** power).sum(axis=1) ** (-1.0 / power)
    return centre + directions * scale[:, None]


def _inside_superellipsoid(points: np.ndarray, shape: tuple[np.ndarray, np.ndarray, float]) -> np.ndarray:
    centre, half, power = shape
    return (np.abs((points - centre) / half) ** power).sum(axis=1) < 1.0


def _wheel_surface(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = np.array(_WHEELS)[rng.integers(0, len(_WHEELS), n)]
    angle = rng.uniform(0, 2 * np.pi, n)
    on_tread = rng.uniform(size=n) < 0.5
    radius = np.where(on_tread, _WHEEL_RADIUS, _WHEEL_RADIUS * np.sqrt(rng.uniform(size=n)))
    side = np.where(rng.uniform(size=n) < 0.5, -0.5, 0.5) * _WHEEL_WIDTH
    width = np.where(on_tread, rng.uniform(-0.5, 0.5, n) * _WHEEL_WIDTH, side)
    return centres + np.stack([radius * np.cos(angle), width, radius * np.sin(angle)], axis=1)


def car_surface(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points on a car-like surface (body, cabin, four wheels), float32 (n, 3)."""
    rng = np.random.default_rng(seed)
    n_body, n_cabin = int(n * 0.55), int(n * 0.25)
    body = _superellipsoid_surface(rng, n_body * 2, _BODY)
    body = body[~_inside_superellipsoid(body, _CABIN)][:n_body]
    cabin = _superellipsoid_surface(rng, n_cabin * 3, _CABIN)
    cabin = cabin[cabin[:, 2] > _BODY[0][2] + 0.2][:n_cabin]
    wheels = _wheel_surface(rng, n - len(body) - len(cabin))
    points = np.concatenate([body, cabin, wheels])
    return points[rng.permutation(len(points))].astype(np.float32)


def car_volume(n: int, seed: int = 0) -> np.ndarray:
    """``n`` points in the air around the car, denser near its surface and in the wake, float32 (n, 3)."""
    rng = np.random.default_rng(seed + 1)
    low, high = _VOLUME_BOX
    chunks, total = [], 0
    while total < n:
        m = 2 * (n - total) + 64
        uniform = rng.uniform(low, high, size=(m // 2, 3))
        near = car_surface(m - m // 2, seed=int(rng.integers(2**31))) + rng.normal(scale=0.35, size=(m - m // 2, 3))
        near[:, 0] += np.abs(rng.normal(scale=1.0, size=m - m // 2))  # drift downstream into the wake
        candidates = np.concatenate([uniform, near])
        keep = (
            (candidates[:, 2] > 0.0)
            & np.all((candidates >= low) & (candidates <= high), axis=1)
            & ~_inside_superellipsoid(candidates, _BODY)
            & ~_inside_superellipsoid(candidates, _CABIN)
        )
        chunks.append(candidates[keep])
        total += int(keep.sum())
    points = np.concatenate(chunks)[:n]
    return points[rng.permutation(n)].astype(np.float32)


def write_sample(path: Path = SAMPLE_PATH, n: int = SAMPLE_POINTS, seed: int = 0) -> Path:
    """Write the shipped sample (surface and volume, ``n`` points each) as an .npz without pickled objects."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, surface=car_surface(n, seed), volume=car_volume(n, seed))
    return path


def load_sample(path: Path = SAMPLE_PATH) -> dict[str, np.ndarray]:
    """The shipped sample as {"surface": (n, 3), "volume": (n, 3)}; regenerated in memory if the file is absent."""
    if not path.exists():
        return {"surface": car_surface(SAMPLE_POINTS), "volume": car_volume(SAMPLE_POINTS)}
    with np.load(path, allow_pickle=False) as data:
        return {key: np.asarray(data[key], dtype=np.float32) for key in ("surface", "volume")}


MAX_CLOUD_BYTES = 64 * 2**20


def load_cloud_bytes(data: bytes, name: str = "point cloud") -> dict[str, np.ndarray]:
    """Parse an uploaded point cloud: .npz with "surface"/"volume" (n, 3) arrays, .npy (n, 3), or CSV/text x,y,z.

    A single array is used for both domains. No pickled objects are ever loaded.
    """
    if len(data) > MAX_CLOUD_BYTES:
        raise ExplorerError(Problem(name, f"is {len(data) / 2**20:.0f} MB; the limit is 64 MB.", "Subsample it."))
    try:
        if data[:2] == b"PK":
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {key: np.asarray(archive[key]) for key in archive.files}
        elif data[:6] == b"\x93NUMPY":
            arrays = {"points": np.load(io.BytesIO(data), allow_pickle=False)}
        else:
            text = data.decode("utf-8")
            arrays = {"points": np.loadtxt(io.StringIO(text), delimiter="," if "," in text else None, ndmin=2)}
    except Exception as exc:  # any parser failure is bad input, reported in one line
        raise ExplorerError(
            Problem(
                name,
                f"could not be read ({type(exc).__name__}: {exc}).",
                "Upload .npz with surface/volume arrays, .npy, or CSV with x,y,z columns.",
            )
        ) from None
    cloud = {key: arrays[key] for key in ("surface", "volume") if key in arrays}
    if not cloud:
        cloud = {"surface": next(iter(arrays.values())), "volume": next(iter(arrays.values()))} if arrays else {}
    for key in ("surface", "volume"):
        points = cloud.get(key)
        if points is None:
            cloud[key] = cloud["surface" if key == "volume" else "volume"]
            continue
        if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or not np.isfinite(points).all():
            raise ExplorerError(
                Problem(
                    f"{name}: {key}",
                    f"must be a finite (n, 3) array, got shape {points.shape}.",
                    "Give x, y, z per point.",
                )
            )
    return {key: cloud[key].astype(np.float32) for key in ("surface", "volume")}


def morton_order(points: np.ndarray, bits: int = 10) -> np.ndarray:
    """Indices that sort points along a Z-order curve, so that neighbours in space become neighbours in the sequence."""
    if len(points) == 0:
        return np.zeros(0, dtype=np.int64)
    low, high = points.min(axis=0), points.max(axis=0)
    cells = ((points - low) / np.maximum(high - low, 1e-9) * (2**bits - 1)).astype(np.uint64)
    code = np.zeros(len(points), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(points.shape[1]):
            code |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(bit * points.shape[1] + axis)
    return np.argsort(code, kind="stable")


def domain_pool(domain: str, sample: dict[str, np.ndarray]) -> np.ndarray:
    """The points a group of ``domain`` draws from: its own domain's, or both for other names."""
    if domain in ("surface", "volume"):
        return sample[domain]
    return np.concatenate([sample["surface"], sample["volume"]])


def domain_points(domain: str, n: int, seed: int, sample: dict[str, np.ndarray], generate: bool = True) -> np.ndarray:
    """``n`` points for a group of ``domain`` ("surface", "volume", anything else = both), deterministic in seed.

    Draws a subset of the sample when it is large enough; otherwise generates more of the car (``generate``, for
    the shipped sample) or reuses points (someone else's cloud). Either way the points come in Z-order so that
    spatial locality shows up as bands near the diagonal of attention maps.
    """
    points = _draw_points(domain, n, seed, sample, generate)
    return points[morton_order(points)]


def _draw_points(domain: str, n: int, seed: int, sample: dict[str, np.ndarray], generate: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pool = domain_pool(domain, sample)
    if n <= len(pool):
        return pool[rng.choice(len(pool), size=n, replace=False)]
    if not generate:
        return pool[rng.choice(len(pool), size=n, replace=True)]
    if domain == "surface":
        return car_surface(n, seed)
    if domain == "volume":
        return car_volume(n, seed)
    half = n // 2
    return np.concatenate([car_surface(half, seed), car_volume(n - half, seed)])

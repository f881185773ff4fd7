"""Regenerate noether/explorer/assets/sample_point_cloud.npz (car-like surface and volume points, 16384 each, seed 0).

Usage: python scripts/make_sample_point_cloud.py
"""

from noether.explorer.pointcloud import write_sample

if __name__ == "__main__":
    print(f"wrote {write_sample()}")

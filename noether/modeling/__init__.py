"""Torch modules compatible with upstream Noether."""

"""Noether Attention Explorer: Noether-compatible attention modules and tools to inspect them."""

__version__ = "0.1.0"

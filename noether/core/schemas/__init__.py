"""Pydantic schemas (pure data, no torch)."""

"""Stateless tensor functions used by the modules."""

"""Placeholder, replaced by its family."""

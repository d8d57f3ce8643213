"""Placeholder: filled by the networks work (issue 12)."""

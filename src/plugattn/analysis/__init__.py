"""Measurement and inspection: cost (params/FLOPs), benchmarks, attention capture."""

"""Benchmarks: ``python -m benchmarks.<name>``; figures are ratios measured back to back."""

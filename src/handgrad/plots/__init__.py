"""Matplotlib figures, drawn headless (Agg) unless a backend is already chosen."""

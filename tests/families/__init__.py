"""Per-family tests: a tiny random instance of every supported mlx-lm family (see factory.py)."""

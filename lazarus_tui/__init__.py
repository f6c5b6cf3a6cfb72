"""lazarus: the Textual app and the headless batch commands."""

# Loads OpenBLAS before any module of this package imports mlx (engine/__init__.py; cheap: the
# rest of engine is imported lazily). Keep it first: ruff's isort sorts within blocks only.
import engine  # noqa: F401

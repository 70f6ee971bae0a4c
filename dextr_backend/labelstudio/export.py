"""TEMPORARY until the lower-layer merge."""
from ..training.datasets import export_labelstudio  # noqa: F401

"""Weights shipped with the code (installed as ``dextr_backend.shipped_weights``); see index.json."""

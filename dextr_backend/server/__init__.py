"""The HTTP side: Label Studio's ML-backend protocol served with FastAPI."""

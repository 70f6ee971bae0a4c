"""Label Studio adapter: its REST API, its task JSON, and (later) the ML-backend protocol."""

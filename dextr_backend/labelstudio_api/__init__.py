"""Label Studio's ML-backend protocol served over FastAPI (``dextr-backend serve``): the routes,
the segmenter behind them (this process or the queue's workers), training requests, health."""

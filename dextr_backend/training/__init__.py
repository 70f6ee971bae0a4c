"""Training: datasets of objects, DEXTR-style samples, the loss, and the trainer."""

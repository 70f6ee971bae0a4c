"""Data the models are measured and trained on: ``benchmarks`` (picture + mask folders and the
objects they hold, as ``evaluate`` reads them), ``objects`` (references to single objects and
their decoding, as the trainer reads them) and ``splits`` (training / validation by image)."""

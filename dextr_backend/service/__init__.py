"""What a serving process keeps for its whole life: one resident predictor and one image cache,
shared by the Label Studio backend, the queue workers and the CVAT functions."""

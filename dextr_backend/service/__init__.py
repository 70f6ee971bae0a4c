"""The tool-neutral service every tool uses: prompts, segmentation (in this process or as a queue
job), and what a serving process keeps for its whole life (one resident predictor, one image cache)."""

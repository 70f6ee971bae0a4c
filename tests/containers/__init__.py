"""Container tests: the images and the compose stack of docker/ for real (see conftest.py)."""

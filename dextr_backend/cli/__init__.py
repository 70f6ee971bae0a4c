"""The ``dextr-backend`` command line: :mod:`.main` builds the parser, one module per command.

The console script imports ``dextr_backend.cli:main``, so that name stays here.
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]

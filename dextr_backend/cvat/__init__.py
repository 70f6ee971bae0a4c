"""CVAT integration: DEXTR as an interactor of CVAT's "AI Tools".

Two ways in, sharing one reading of the prompts (:mod:`.prompts`):

- :mod:`.native` is a *native function* for ``cvat-cli function create-native`` and
  ``cvat-cli function run-agent`` (needs the ``cvat`` extra: ``pip install 'dextr-backend[cvat]'``);
- :mod:`.nuclio` parses and answers the requests CVAT's lambda manager sends to a nuclio
  function; ``docker/nuclio/dextr/main.py`` is its thin shim.

Nothing heavy is imported here, so ``import dextr_backend.cvat`` costs nothing.
"""

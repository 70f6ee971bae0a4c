"""nuclio entry points of the DEXTR interactor for CVAT.

The request parsing and answers live in :mod:`dextr_backend.cvat.nuclio` (installed into the
function image from the wheel in ``dist/``), so they are tested with the package.
"""

from dextr_backend.cvat.nuclio import handler, init_context  # noqa: F401  (nuclio looks them up here)

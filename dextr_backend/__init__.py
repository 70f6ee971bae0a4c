"""dextr-backend: Deep Extreme Cut (DEXTR) as a click-to-mask backend for Label Studio and CVAT."""

import os as _os

__version__ = "0.1.0"

# OpenCV refuses to decode images above this many pixels *before* allocating them, which is
# what stops a small "decompression bomb" file from eating the server's memory.
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", _os.environ.get("DEXTR_MAX_IMAGE_PIXELS", "80000000"))

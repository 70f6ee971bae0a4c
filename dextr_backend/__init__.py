"""dextr-backend: Deep Extreme Cut (DEXTR) as a click-to-mask backend for Label Studio and CVAT."""

from .settings import limit_opencv_decoding as _limit_opencv_decoding

__version__ = "0.1.0"

_limit_opencv_decoding()

"""dextr-backend: Deep Extreme Cut (DEXTR) as a click-to-mask backend for Label Studio and CVAT."""

__version__ = "0.1.0"

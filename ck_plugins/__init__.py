"""ck-precision-bench: which library, precision and batch size runs this network fastest, layer by layer, and why."""

__version__ = "0.1.0"

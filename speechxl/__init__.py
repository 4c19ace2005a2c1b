"""speechxl: end-to-end speech translation training toolkit."""

__version__ = "0.1.0"

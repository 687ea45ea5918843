"""mailstack: a complete small mail server on trio."""

__version__ = "0.1.0"

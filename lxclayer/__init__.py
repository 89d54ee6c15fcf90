"""lxclayer: a content-addressed, layered builder for reproducible LXC container templates."""

__version__ = "0.1.0"

"""The version of pokevq, in a module of its own so any part can read it without importing the package face."""

__version__ = "0.1.0"

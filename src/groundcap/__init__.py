"""groundcap: build, check and release datasets of dense grounded captions."""

__version__ = "0.1.0"

"""The package version (one place; ``jaxlr.__version__`` re-exports it)."""

version = "0.2.0"

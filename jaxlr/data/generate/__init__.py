"""Generators of the bundled data sets (run as modules; heavy dependencies are optional extras)."""

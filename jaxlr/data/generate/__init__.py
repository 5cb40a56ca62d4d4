"""Generators of the reference data sets shipped with jaxlr (run as modules; see each file's header)."""

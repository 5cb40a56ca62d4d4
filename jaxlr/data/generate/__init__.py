"""Generators of the bundled data sets: ``python -m jaxlr.data.generate.point_charges`` and
``python -m jaxlr.data.generate.water_clusters`` (heavy dependencies in the ``dataset`` extra)."""

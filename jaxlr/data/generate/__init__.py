"""Generators of the bundled data sets (heavy dependencies in the ``dataset`` extra):

* ``python -m jaxlr.data.generate.point_charges`` — the point-charge sets;
* ``python -m jaxlr.data.generate.water_clusters`` — (H2O)n at PBE/def2-SVP (PySCF), sampled
  by GFN2-xTB MD (tblite), and the (H2O)12/16 transfer set;
* ``python -m jaxlr.data.generate.water_response`` — the PBE/def2-SVPD response set
  (finite-field polarisabilities, ESP on Merz–Kollman shells);
* ``python -m jaxlr.data.generate.water_periodic`` — 32-water boxes at GFN2-xTB (tblite),
  sampled with flexible TIP3P (OpenMM): a reference for machinery, not for physics.

Each is staged (sample, label, assemble), resumable and deterministic for a seed; the shared
machinery is in :mod:`jaxlr.data.generate._shards`.
"""

"""Periodic water boxes at GFN2-xTB: the bundled set for periodic machinery (stress, Qeq, MD).

**A GFN2-xTB reference for machinery — periodic Qeq and density models, stress training,
molecular dynamics — not for physics.**  Made in this repository by
:mod:`jaxlr.data.generate.water_periodic`: 300 cubic boxes of 32 waters (96 atoms) at
0.997 g/cm³ (edge 9.86536 Å), sampled every 200 fs from ten Langevin trajectories of
classical flexible TIP3P water (OpenMM; six at 300 K, two at 350 K, two at 400 K) and
labelled with periodic GFN2-xTB (tblite).  Method, settings, package versions, the sampling
force field and the seed are in every frame's header and kept in ``Structure.info``.
Licence: the project's own (see ``LICENSE``).

Per frame: ``cell`` (3, 3) Å, periodic in 3D; targets ``energy`` (total GFN2-xTB energy, eV),
``forces`` (eV/Å), ``stress`` (3×3 eV/Å³, ASE's sign: σ = (1/V) ∂E/∂ε, positive under
tension, as everywhere in jaxlr) and ``charges`` (GFN2-xTB Mulliken charges, e; they sum to
0); ``total_charge`` 0.  Info: ``structure_id``, ``trajectory`` (0–9), ``snapshot``,
``temperature_K``, ``md_time_fs``, ``ff_energy_eV`` (the force field's energy) and the
provenance keys (``reference``, ``method``, ``tblite_*``, ``*_version``, ``seed``, …).
"""

from __future__ import annotations

from ._bundled import read_cached
from ._dataset import Dataset

__all__ = ["load_water_periodic"]

WATER_PERIODIC = "water_periodic.extxyz.gz"


def load_water_periodic(*, charges: bool = True, trajectories=None) -> Dataset:
    """The periodic GFN2-xTB water set: 32-water boxes with energy, forces, stress, charges.

    A GFN2-xTB reference for machinery (periodic Qeq/density models, stress, MD), not for
    physics: see :mod:`jaxlr.data.generate.water_periodic`.

    Args:
      charges: keep the ``charges`` target (GFN2-xTB Mulliken charges, e); False drops it.
      trajectories: keep only frames of these sampling trajectories (an int or a
        collection of ints in 0–9); frames of one trajectory are 200 fs apart and
        correlated, so split training and test sets by trajectory.

    Returns:
      :class:`jaxlr.data.Dataset` of periodic structures; targets ``energy`` eV,
      ``forces`` (96, 3) eV/Å, ``stress`` (3, 3) eV/Å³ (ASE sign), ``charges`` (96,) e.

    Raises:
      ValueError: ``charges`` not a bool; a trajectory index with no frame.

    Example:
      >>> ds = load_water_periodic()
      >>> len(ds), ds.species, ds.available_targets()
      (300, (1, 8), ('energy', 'forces', 'stress', 'charges'))
      >>> s = ds[0]
      >>> s.n_atoms, s.periodic, round(float(s.cell[0, 0]), 5)
      (96, True, 9.86536)
      >>> len(load_water_periodic(charges=False, trajectories=[8, 9])), s.info["method"]
      (60, 'GFN2-xTB')
    """
    if not isinstance(charges, bool):
        raise ValueError(f"charges must be True or False, got {charges!r}.")
    structures = list(read_cached(WATER_PERIODIC, ":", None))
    if trajectories is not None:
        try:
            keep = {int(trajectories)} if isinstance(trajectories, int) else {int(t) for t in trajectories}
        except (TypeError, ValueError):
            raise ValueError(f"trajectories must be an int or a collection of ints, got {trajectories!r}.") from None
        present = {int(s.info["trajectory"]) for s in structures}
        missing = sorted(keep - present)
        if missing:
            raise ValueError(f"no frame of trajectory {missing}; the set holds trajectories {sorted(present)}.")
        structures = [s for s in structures if int(s.info["trajectory"]) in keep]
    if not charges:
        structures = [s.replace(targets={k: v for k, v in s.targets.items() if k != "charges"}) for s in structures]
    return Dataset(structures)

"""Bundled data sets (small, committed; never recomputed in CI).

* ``point_charges.xyz.gz`` — 2000 periodic boxes of 64 random point charges (±1 e, written as
  Na/Cl) with Ewald energies, forces and stress (Grisafi & Ceriotti, JCP 151, 204105 (2019)
  protocol); made by :mod:`jaxlr.data.generate.point_charges`.  :func:`load_point_charges`.
* ``charge-charge.xyz`` — 130 cation–anion dimers (10 pairs × 13 distances, 3.7–8.7 Å) with
  DFT energies and forces, from the BioFragment database subset used by Grisafi, Nigam &
  Ceriotti, Chem. Sci. 12, 2078 (2021) (BSD 3-Clause, see ``charge-charge.LICENSE``).
  :func:`load_charged_dimers`, :func:`dimer_monomers`.

Units: Å, eV, e.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from ._dataset import Dataset
from ._structures import Structure, detect_fragments, read_structures

__all__ = ["data_path", "load_point_charges", "load_charged_dimers", "dimer_monomers"]

POINT_CHARGES = "point_charges.xyz.gz"
CHARGED_DIMERS = "charge-charge.xyz"


def data_path(name: str) -> str:
    """Path of a bundled data file inside the installed package.

    Args:
      name: file name in ``jaxlr/datasets/data/`` (e.g. ``"charge-charge.xyz"``).

    Returns:
      the path as a string.

    Raises:
      FileNotFoundError: naming the files that are available.

    Example:
      >>> import os
      >>> os.path.basename(data_path("charge-charge.xyz"))
      'charge-charge.xyz'
    """
    folder = resources.files("jaxlr.data") / "files"
    path = folder / name
    if not path.is_file():
        available = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FileNotFoundError(f"no bundled data file {name!r}; available: {available}.")
    return str(path)


@functools.lru_cache(maxsize=None)
def read_cached(name: str, index: str, periodic) -> tuple[Structure, ...]:
    """The structures of a bundled file, parsed once per process (they are immutable)."""
    # structures are immutable, so the parsed file can be shared between callers
    return tuple(read_structures(data_path(name), index=index, periodic=periodic))


def load_point_charges(n: int | None = None) -> Dataset:
    """The random point-charge data set: periodic cubic boxes of 64 charges.

    Each structure: 32 Na (charge +1 e) and 32 Cl (−1 e) at random positions with a
    minimum-image separation ≥ 2.5 Å in a cubic box of edge 12–20 Å; targets ``energy``
    (eV, Ewald sum of the point charges, tin-foil boundary), ``forces`` (eV/Å, 6 decimals),
    ``stress`` (eV/Å³, ASE sign) and ``charges`` (e); ``total_charge`` 0; info ``box``
    (edge, Å).  Positions are stored with 6 decimals and the references were computed from
    the rounded positions (relative accuracy of the Ewald sums ~1e-8 in forces).

    Args:
      n: the first ``n`` structures only (default: all 2000).

    Returns:
      :class:`jaxlr.data.Dataset` (parsing all 2000 frames takes a few seconds; the
      result is cached for the session).

    Example:
      >>> ds = load_point_charges(10)
      >>> len(ds), ds.species, ds[0].n_atoms
      (10, (11, 17), 64)
    """
    if n is not None and int(n) < 0:
        raise ValueError(f"n must be a non-negative number of structures, got {n}.")
    full = read_cached(POINT_CHARGES, ":", None)
    return Dataset(full if n is None else full[: int(n)])


def load_charged_dimers() -> Dataset:
    """The 130 cation–anion dimers as open-boundary structures with two fragments each.

    The 30 Å cell of the file is only a container and is dropped.  Per structure:
    targets ``energy`` (eV, total DFT energy of the dimer) and ``forces`` (eV/Å);
    ``fragments`` from covalent connectivity (:func:`jaxlr.data.detect_fragments`),
    fragment 0 = monomer A (its atoms come first in every frame — checked), with
    ``fragment_charges = [chargeA, chargeB]`` (e) and ``total_charge = chargeA + chargeB``
    (0); info keeps ``distance`` (Å, centre-to-centre), ``label``, ``chargeA``, ``chargeB``,
    ``energyA``, ``energyB`` (isolated monomer energies, eV) and adds ``binding_energy =
    energy − energyA − energyB`` (eV).  In 39 frames monomer A is the anion (chargeA = −1).

    Returns:
      :class:`jaxlr.data.Dataset` of 130 structures.

    Raises:
      ValueError: if a frame does not split into exactly two fragments with the atoms of
        monomer A first (a corrupted or different file).

    Example:
      >>> ds = load_charged_dimers()
      >>> len(ds), ds.species, ds[0].fragment_charges.tolist()
      (130, (1, 6, 7, 8), [1.0, -1.0])
      >>> short = ds.subset(lambda s: s.info["distance"] < 6.0)   # the cookbook's training set
    """
    out = []
    for k, s in enumerate(read_cached(CHARGED_DIMERS, ":", False)):
        frag = detect_fragments(s.positions, s.numbers)
        n_a = int(np.sum(frag == 0))
        if frag.max() != 1 or not np.all(frag[:n_a] == 0) or not np.all(frag[n_a:] == 1):
            raise ValueError(f"dimer {k}: expected two molecules with the atoms of monomer A first, found "
                             f"fragment labels {frag.tolist()}.")
        info = dict(s.info)
        charge_a, charge_b = float(info["chargeA"]), float(info["chargeB"])
        energy = float(s.targets["energy"])
        info["binding_energy"] = energy - float(info["energyA"]) - float(info["energyB"])
        out.append(s.replace(fragments=frag, fragment_charges=np.array([charge_a, charge_b]),
                             total_charge=charge_a + charge_b, info=info))
    return Dataset(out)


def dimer_monomers(dataset) -> Dataset:
    """The two isolated monomers of every dimer, with the monomer energies as targets.

    For dimer ``k`` the result holds, at positions ``2k`` and ``2k + 1``, monomer A and
    monomer B: the same geometry as in the dimer, open boundary, ``total_charge``
    ``chargeA`` / ``chargeB`` (e), target ``energy`` = ``energyA`` / ``energyB`` (eV; no
    forces are known), info ``parent`` (index of the dimer), ``monomer`` ("A" or "B"),
    plus ``distance`` and ``label`` of the dimer.

    Args:
      dataset: dimers from :func:`load_charged_dimers` (or any structures with two
        fragments and info ``chargeA``, ``chargeB``, ``energyA``, ``energyB``).

    Returns:
      :class:`jaxlr.data.Dataset` of ``2 len(dataset)`` structures.

    Example:
      >>> dimers = load_charged_dimers()
      >>> mono = dimer_monomers(dimers[:2])
      >>> [(m.info["parent"], m.info["monomer"], m.total_charge) for m in mono]
      [(0, 'A', 1.0), (0, 'B', -1.0), (1, 'A', 1.0), (1, 'B', -1.0)]
    """
    out = []
    for k, s in enumerate(dataset):
        if s.fragments is None or s.n_fragments != 2:
            raise ValueError(f"structure {k} is not a dimer with two fragments.")
        for label, f in (("A", 0), ("B", 1)):
            sel = s.fragments == f
            info = {"parent": k, "monomer": label}
            for key in ("distance", "label"):
                if key in s.info:
                    info[key] = s.info[key]
            out.append(Structure(positions=s.positions[sel], numbers=s.numbers[sel], cell=None,
                                 total_charge=float(s.info[f"charge{label}"]),
                                 targets={"energy": float(s.info[f"energy{label}"])}, info=info))
    return Dataset(out)

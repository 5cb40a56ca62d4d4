"""Water clusters (H2O)n at PBE/def2-SVP: the bundled quantum-chemistry data sets.

Made in this repository by :mod:`jaxlr.data.generate.water_clusters` (GFN2-xTB Langevin
sampling at 200/300/450 K, PySCF labels; the level of theory, sampling and package
versions are written in every frame's header and kept in ``Structure.info``).  Licence:
the project's own (see ``LICENSE``).

* ``water_clusters.extxyz.gz`` — (H2O)n, n = 1–8 (most weight on 2–6):
  :func:`load_water_clusters`.
* ``water_transfer.extxyz.gz`` — 10 (H2O)12 and 10 (H2O)16 for size transfer, test only:
  :func:`load_water_transfer`.

Per frame: targets ``energy`` (total PBE energy, eV), ``forces`` (eV/Å), ``dipole`` (e·Å,
about the origin; the clusters are neutral) and ``coefficients`` (N, 10): the total charge
density (nuclei + electrons) in the s + p Gaussian basis of :func:`reference_basis`, fitted in
the Coulomb metric with the charge and the PBE dipole as exact constraints, each nucleus
added to its atom's narrowest s function (so ``Σ_s c`` are atomic charges summing to 0).
Info: ``basis_widths`` (N, 6) Å (the widths of each atom's 4 s and 2 p slots, read by
:class:`jaxlr.data.BatchLoader` so that the coefficient loss is the Coulomb metric),
``hirshfeld_charges`` (N,) e and ``hirshfeld_dipoles`` (N, 3) e·Å, ``esp_rmse``
(mHa/e, the fit's electrostatic-potential error on Merz–Kollman shells against the exact
PBE potential — the fit-quality flag), ``n_waters``, ``temperature_K``, ``rattled``,
``structure_id`` and the provenance keys.
"""

from __future__ import annotations

import numpy as np

from ._bundled import read_cached
from ._dataset import Dataset
from ._structures import chemical_symbol

__all__ = ["load_water_clusters", "load_water_transfer", "mean_coefficients", "reference_basis",
           "reference_basis_widths"]

WATER_CLUSTERS = "water_clusters.extxyz.gz"
#: the bundled water-cluster sets by sampling seed (the generator's ``--seed``): the same
#: recipe and size distribution, independent trajectories
WATER_CLUSTER_SETS = {0: WATER_CLUSTERS, 1: "water_clusters_seed1.extxyz.gz"}
WATER_TRANSFER = "water_transfer.extxyz.gz"
CHARGE_SOURCES = (None, "hirshfeld", "density")


def _with_charges(structures, charges) -> Dataset:
    if charges not in CHARGE_SOURCES:
        raise ValueError(f"charges must be one of {CHARGE_SOURCES}, got {charges!r}.")
    out = []
    for s in structures:
        sigma_s, sigma_p = reference_basis_widths(s)
        s = s.replace(info={**s.info, "basis_widths": np.concatenate([sigma_s, sigma_p], axis=1)})
        if charges is not None:
            if charges == "hirshfeld":
                q = np.asarray(s.info["hirshfeld_charges"], dtype=np.float64).reshape(-1)
            else:
                n_s = reference_basis_widths(s)[0].shape[1]
                q = np.asarray(s.targets["coefficients"])[:, :n_s].sum(axis=1)
            s = s.replace(targets={**s.targets, "charges": q})
        out.append(s)
    return Dataset(out)


def load_water_clusters(*, charges: str | None = None, n_waters=None, seeds=None) -> Dataset:
    """The (H2O)n clusters, n = 1–8, at PBE/def2-SVP (open boundary, neutral).

    Two sets of 500 are bundled, sampled with the same recipe from independent trajectories
    (sampling seeds 0 and 1, ``info["seed"]``); structure ids of seed 1 end in ``-seed1``.

    Args:
      charges: also set a ``charges`` target (e): ``"hirshfeld"`` (Hirshfeld charges, as
        4G-HDNNP-style models train on), ``"density"`` (``Σ_s c``, the charges of the fitted
        density), or None (no charge target).
      n_waters: keep only clusters of these sizes (an int or a collection of ints).
      seeds: which sets (an int or a collection of 0 and 1); None: both, seed 0 first.

    Returns:
      :class:`jaxlr.data.Dataset`; targets ``energy`` eV, ``forces`` eV/Å, ``dipole`` e·Å,
      ``coefficients`` (N, 10) in the basis of :func:`reference_basis` (plus ``charges``).

    Raises:
      ValueError: for an unknown ``charges`` source or seed, or an ``n_waters`` with no cluster.

    Example:
      >>> ds = load_water_clusters()
      >>> len(ds), ds.species, ds.available_targets()
      (1000, (1, 8), ('energy', 'forces', 'dipole', 'coefficients'))
      >>> len(load_water_clusters(seeds=0)), sorted({int(s.info["seed"]) for s in ds})
      (500, [0, 1])
      >>> dimers = load_water_clusters(n_waters=2, charges="density")
      >>> all(s.n_atoms == 6 for s in dimers), abs(float(dimers[0].targets["charges"].sum())) < 1e-8
      (True, True)
    """
    if seeds is None:
        chosen = sorted(WATER_CLUSTER_SETS)
    else:
        try:
            chosen = [int(seeds)] if np.ndim(seeds) == 0 else [int(k) for k in seeds]
        except (TypeError, ValueError):
            chosen = [seeds]
        unknown = [k for k in chosen if k not in WATER_CLUSTER_SETS]
        if unknown or not chosen:
            raise ValueError(f"seeds must be among the bundled sampling seeds {sorted(WATER_CLUSTER_SETS)}, "
                             f"got {seeds!r}.")
    structures = [s for k in dict.fromkeys(chosen) for s in read_cached(WATER_CLUSTER_SETS[k], ":", False)]
    structures = select_n_waters(structures, n_waters, "the set holds n = 1–8")
    return _with_charges(structures, charges)


def select_n_waters(structures, n_waters, holds: str = "") -> list:
    """The clusters of the given sizes (``info["n_waters"]``), in their order.

    Args:
      structures: structures with ``info["n_waters"]``.
      n_waters: an int, a collection of ints, or None (keep every structure).
      holds: what the set holds, for the error message (e.g. ``"the set holds n = 1–8"``).

    Returns:
      a list of the kept structures (the same objects).

    Raises:
      ValueError: if no structure has one of the sizes.

    Example:
      >>> ds = load_water_clusters()
      >>> len(select_n_waters(ds, (1, 2))) == len(load_water_clusters(n_waters=[1, 2]))
      True
      >>> select_n_waters(ds, 9, "the set holds n = 1–8")
      Traceback (most recent call last):
      ValueError: no cluster with n_waters in [9]; the set holds n = 1–8.
    """
    structures = list(structures)
    if n_waters is None:
        return structures
    sizes = {int(n_waters)} if np.ndim(n_waters) == 0 else {int(k) for k in n_waters}
    kept = [s for s in structures if int(s.info["n_waters"]) in sizes]
    if not kept:
        raise ValueError(f"no cluster with n_waters in {sorted(sizes)}" + (f"; {holds}." if holds else "."))
    return kept


def water_cluster_splits(*, charges: str | None = None, seed: int = 0,
                         extra: bool = True) -> tuple[Dataset, Dataset, Dataset]:
    """The fixed split of :func:`load_water_clusters` that jaxlr's water models use.

    A ``numpy.random.default_rng(seed).permutation`` of the seed-0 set (500 clusters): its
    first 10 % are the test split, the next 10 % the validation split (early stopping), the
    rest the training pool; with ``extra`` the 500 clusters of the seed-1 set follow in the
    pool (validation and test stay the same 50 + 50).  Learning curves take the pool's first
    k structures, so k ≤ 400 draws only on the seed-0 set.  Score a model on ``test`` only;
    the shipped ``water-*`` models (:func:`jaxlr.train.pretrained_models`) say in their
    metadata which pool they were trained on.

    Args:
      charges: as :func:`load_water_clusters`.
      seed: the permutation's seed.
      extra: add the seed-1 set to the pool (False: the 400-cluster pool of the seed-0 set).

    Returns:
      ``(pool, valid, test)`` datasets (900 / 50 / 50 structures; 400 / 50 / 50 without extra).

    Example:
      >>> pool, valid, test = water_cluster_splits()
      >>> len(pool), len(valid), len(test)
      (900, 50, 50)
      >>> ids = [s.info["structure_id"] for s in (*pool, *valid, *test)]
      >>> len(set(ids)) == 1000
      True
      >>> small = water_cluster_splits(extra=False)
      >>> len(small[0]), [s.info["structure_id"] for s in small[2]] == [s.info["structure_id"] for s in test]
      (400, True)
    """
    ds = load_water_clusters(charges=charges, seeds=0)
    order = np.random.default_rng(seed).permutation(len(ds))
    n_test = n_valid = len(ds) // 10
    pick = lambda idx: [ds[int(i)] for i in idx]   # noqa: E731
    pool = pick(order[n_test + n_valid:])
    if extra:
        pool += list(load_water_clusters(charges=charges, seeds=[k for k in WATER_CLUSTER_SETS if k != 0]))
    return Dataset(pool), Dataset(pick(order[n_test:n_test + n_valid])), Dataset(pick(order[:n_test]))


def load_water_transfer(*, charges: str | None = None) -> Dataset:
    """The size-transfer clusters (H2O)12 and (H2O)16 (test only; same level and targets).

    Args:
      charges: as :func:`load_water_clusters`.

    Returns:
      :class:`jaxlr.data.Dataset`.

    Example:
      >>> ds = load_water_transfer()
      >>> sorted({int(s.info["n_waters"]) for s in ds}), len(ds)
      ([12, 16], 20)
    """
    return _with_charges(read_cached(WATER_TRANSFER, ":", False), charges)


def reference_basis(structure) -> dict:
    """The density-fit basis of a water-cluster frame, per element, from its header.

    Args:
      structure: a :class:`jaxlr.data.Structure` of :func:`load_water_clusters`.

    Returns:
      ``{atomic number: (s widths, p widths)}`` in Å, narrowest first; s functions carry
      unit charge, p functions unit dipole (:mod:`jaxlr.electrostatics` conventions).

    Raises:
      ValueError: if the frame has no basis widths in its info.

    Example:
      >>> reference_basis(load_water_clusters()[0])
      {1: ((0.25, 0.45, 0.7), (0.35,)), 8: ((0.05, 0.25, 0.45, 0.7), (0.25, 0.5))}
    """
    out = {}
    for z in sorted({int(z) for z in structure.numbers}):
        el = chemical_symbol(z)
        try:
            s_w, p_w = structure.info[f"widths_{el}_s"], structure.info[f"widths_{el}_p"]
        except KeyError:
            raise ValueError(f"the frame has no density-basis widths for {el} (info keys widths_{el}_s/_p); "
                             "it does not come from the water-cluster generator.") from None
        out[z] = tuple(tuple(float(w) for w in (v.split() if isinstance(v, str) else np.atleast_1d(v)))
                       for v in (s_w, p_w))
    return out


def reference_basis_widths(structure) -> tuple[np.ndarray, np.ndarray]:
    """Per-atom widths of the reference coefficients' basis, in the padded layout.

    Args:
      structure: a water-cluster :class:`jaxlr.data.Structure`.

    Returns:
      ``(sigma_s (N, n_s), sigma_p (N, n_p))`` Å, padded to the largest element's counts
      (4 s, 2 p); a padding slot repeats the element's widest width of that kind (its
      coefficient is exactly 0, so it adds nothing to the density).

    Example:
      >>> s = load_water_clusters(n_waters=1)[0]
      >>> sigma_s, sigma_p = reference_basis_widths(s)
      >>> s.numbers.tolist(), sigma_s.shape, sigma_p[1].tolist()
      ([8, 1, 1], (3, 4), [0.35, 0.35])
    """
    basis = reference_basis(structure)
    n_s = max(len(s) for s, _ in basis.values())
    n_p = max(len(p) for _, p in basis.values())
    sig_s = np.array([list(basis[int(z)][0]) + [basis[int(z)][0][-1]] * (n_s - len(basis[int(z)][0]))
                      for z in structure.numbers])
    sig_p = np.array([list(basis[int(z)][1]) + [basis[int(z)][1][-1]] * (n_p - len(basis[int(z)][1]))
                      for z in structure.numbers])
    return sig_s.reshape(-1, n_s), sig_p.reshape(-1, n_p)


def mean_coefficients(dataset, *, neutral: bool = True) -> tuple:
    """Each element's mean reference density coefficients (a "promolecule").

    Args:
      dataset: structures with a ``coefficients`` target (N, K) and their basis in
        ``info["basis_widths"]`` (N, n_s + n_p), as :func:`load_water_clusters` gives.
      neutral: make each element's density neutral by removing its mean charge from its
        widest s function (the density model requires a neutral promolecule).

    Returns:
      ``((Z, (K coefficients...)), ...)`` sorted by atomic number, the form the density
      model's ``promolecule`` takes (:class:`jaxlr.models.DensityModel`): the mean s
      coefficients (e) and p coefficients set to exactly 0 — a per-element density must be
      spherical, since a mean atomic dipole is a fixed vector in the laboratory frame and
      would break rotational invariance.

    Raises:
      ValueError: if a structure lacks coefficients or basis widths.

    Example:
      >>> pro = dict(mean_coefficients(load_water_clusters(n_waters=1)))
      >>> sorted(pro), len(pro[8]), round(sum(pro[8][:4]), 12), round(sum(pro[1][:4]), 12), any(pro[8][4:])
      ([1, 8], 10, 0.0, 0.0, False)
    """
    sums, counts, n_s, widest = {}, {}, None, {}
    for k, s in enumerate(dataset):
        if "coefficients" not in s.targets or s.info.get("basis_widths") is None:
            raise ValueError(f"structure {k} has no 'coefficients' target or no info['basis_widths'].")
        c = np.asarray(s.targets["coefficients"], dtype=np.float64)
        w = np.asarray(s.info["basis_widths"], dtype=np.float64)
        n_s = (3 * w.shape[1] - c.shape[1]) // 2
        for z in np.unique(s.numbers):
            sel = s.numbers == z
            sums[int(z)] = sums.get(int(z), 0.0) + c[sel].sum(axis=0)
            counts[int(z)] = counts.get(int(z), 0) + int(sel.sum())
            # the widest s function that the element really has (padding slots repeat a width)
            ws = w[np.flatnonzero(sel)[0], :n_s]
            widest[int(z)] = int(np.flatnonzero(ws == ws.max())[0])
    out = []
    for z in sorted(sums):
        mean = sums[z] / counts[z]
        mean[n_s:] = 0.0                 # spherical: no fixed atomic dipole
        if neutral:
            mean[widest[z]] -= mean[:n_s].sum()
        out.append((z, tuple(float(x) for x in mean)))
    return tuple(out)

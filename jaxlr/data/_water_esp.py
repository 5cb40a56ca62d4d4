"""The exact PBE electrostatic potential on the Merz–Kollman shells of the water-cluster test split.

Made in this repository by :mod:`jaxlr.data.generate.water_esp`: for every structure of the
test split of :func:`jaxlr.data.water_cluster_splits` (``seed=0``, 50 clusters) the SCF of
:func:`jaxlr.data.load_water_clusters` was recomputed at its level (RKS PBE/def2-SVP, density
fitted with def2-universal-jkfit, grid level 3, conv_tol 1e-9) and its potential — point
nuclei plus the electron density — evaluated on the Merz–Kollman shells of the bundled
``esp_rmse`` (1.4, 1.6, 1.8, 2.0 × vdW radius, H 1.2 Å, O 1.4 Å, ≈1 point/Å²).  The
recomputation reproduces the bundled energies and dipoles exactly and, fitting the density
anew, the bundled ``esp_rmse`` exactly; the bundled coefficients (8 decimals) give it to
4e-7 mHa/e.  50 clusters, 39,040 points.
Licence: the project's own (see ``LICENSE``).

* ``water_clusters_esp.npz`` — :func:`load_water_esp`, :func:`water_esp_provenance`.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from ._bundled import data_path

__all__ = ["WATER_ESP", "load_water_esp", "water_esp_provenance"]

WATER_ESP = "water_clusters_esp.npz"


@functools.lru_cache(maxsize=1)
def _read() -> tuple[dict, dict]:
    try:
        path = data_path(WATER_ESP)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} The exact potentials are made by 'python -m jaxlr.data.generate.water_esp "
                                f"all --dest jaxlr/data/files/{WATER_ESP}' (needs PySCF).") from None
    with np.load(path, allow_pickle=False) as z:
        ids, offsets = [str(i) for i in z["structure_id"]], np.asarray(z["offsets"])
        points, esp = np.array(z["points"], dtype=np.float64), np.array(z["esp"], dtype=np.float64)
        prov = json.loads(str(z["provenance"]))
    if points.shape != (len(esp), 3) or len(offsets) != len(ids) + 1 or offsets[-1] != len(esp):
        raise ValueError(f"{path} is not an exact-potential file: points {points.shape}, esp {esp.shape}, "
                         f"{len(ids)} ids and {len(offsets)} offsets.")
    points.setflags(write=False)
    esp.setflags(write=False)
    table = {sid: (points[a:b], esp[a:b]) for sid, a, b in zip(ids, offsets[:-1], offsets[1:])}
    return table, prov


def load_water_esp() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The exact PBE/def2-SVP potential on the Merz–Kollman points of the water test clusters.

    Returns:
      ``{structure_id: (points, esp)}`` for the 50 clusters of the test split of
      :func:`jaxlr.data.water_cluster_splits` (``seed=0``), keyed by the
      ``info["structure_id"]`` of :func:`jaxlr.data.load_water_clusters`:

      * ``points`` (M, 3) Å — the Merz–Kollman shells of the bundled ``esp_rmse``
        (:func:`jaxlr.system.merz_kollman_points` with its defaults gives the same points);
      * ``esp`` (M,) Hartree/e (× 27.211386 for V) — the exact PBE electrostatic potential
        of the point nuclei and the SCF electron density (no fit).

      A new dict each call; the arrays are read-only views of one array shared in the
      process.  :func:`jaxlr.train.density_esp_errors` takes it as ``exact=``.

    Raises:
      FileNotFoundError: if the data file is not bundled.

    Example:
      >>> from jaxlr.data import water_cluster_splits
      >>> exact = load_water_esp()
      >>> test = water_cluster_splits()[2]
      >>> sorted(exact) == sorted(s.info["structure_id"] for s in test)
      True
      >>> points, esp = exact[test[0].info["structure_id"]]
      >>> points.shape[1], points.shape[0] == esp.shape[0], bool(abs(esp).max() < 0.2)
      (3, True, True)
    """
    return dict(_read()[0])


def water_esp_provenance() -> dict:
    """How the exact potentials of :func:`load_water_esp` were made.

    Returns:
      a new dict: ``level``, ``basis``, ``auxbasis``, ``grid_level``, ``conv_tol``, the
      split (``split``, ``split_seed``), ``source`` (the bundled file the structures come
      from) and its ``source_sha256``, ``units``, the checks' tolerances (``checks``) and
      the package versions (``pyscf_version``…).

    Example:
      >>> p = water_esp_provenance()
      >>> p["level"], p["basis"], p["split"], p["split_seed"], p["units"]["esp"]
      ('PBE', 'def2-svp', 'test', 0, 'Hartree/e')
    """
    return json.loads(json.dumps(_read()[1]))

"""The water response set: (H2O)n, n = 1–6, at PBE/def2-SVPD (test only).

Made in this repository by :mod:`jaxlr.data.generate.water_response` (geometries sampled
exactly as the training set, :mod:`jaxlr.data.generate.water_clusters`; labels at
PBE/def2-SVPD, density fitted with def2-universal-jkfit, grid level 3, conv_tol 1e-9; the
level, field and package versions are in every frame's header and kept in
``Structure.info``).  Licence: the project's own (see ``LICENSE``).

Its purpose is to judge the static response of models trained on the PBE/def2-SVP
clusters (:func:`jaxlr.data.load_water_clusters`): def2-SVP lacks diffuse functions and
under-polarises water by ~48 % (α_iso of the monomer 5.29 bohr³ against 10.10 bohr³ at
def2-SVPD), so a model that reproduces its training data should be expected to fall short
of these polarisabilities by about as much; the dipoles and potentials differ far less.

* ``water_response.extxyz.gz`` — 30 clusters, 5 per size n = 1…6: :func:`load_water_response`.
"""

from __future__ import annotations

import numpy as np

from ._bundled import data_path, read_cached
from ._dataset import Dataset
from ._water import select_n_waters

__all__ = ["load_water_response", "WATER_RESPONSE"]

WATER_RESPONSE = "water_response.extxyz.gz"
#: per-structure values of the response set and their shapes (M: Merz–Kollman points)
RESPONSE_KEYS = {"polarizability": (3, 3), "esp_points": ("M", 3), "esp": ("M",)}


def _frozen(value, shape, where: str) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if arr.ndim == 1 and len(shape) == 2 and arr.size % shape[1] == 0:
        arr = arr.reshape(-1, shape[1])                 # flattened in the file
    if arr.ndim != len(shape) or any(isinstance(d, int) and d != k for d, k in zip(shape, arr.shape)):
        raise ValueError(f"{where} has shape {arr.shape}, expected {shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where} contains NaN or inf values.")
    arr.setflags(write=False)
    return arr


def load_water_response(*, n_waters=None) -> Dataset:
    """The (H2O)n response set, n = 1–6, at PBE/def2-SVPD (open boundary, neutral).

    Args:
      n_waters: keep only clusters of these sizes (an int or a collection of ints).

    Returns:
      :class:`jaxlr.data.Dataset`; targets ``energy`` (total PBE/def2-SVPD energy, eV) and
      ``dipole`` (e·Å, about the origin); per structure in ``info``:

      * ``polarizability`` (3, 3) e·Å²/V — the static α_ab = ∂μ_a/∂F_b by central finite
        differences of the SCF dipole (fields ±0.001 a.u. = ±0.0514 V/Å), the unit of
        :func:`jaxlr.models.polarizability` (:func:`jaxlr.models.polarizability_volume`
        converts to Å³ or bohr³); ``alpha_iso_bohr3`` its trace / 3 in bohr³, and
        ``alpha_analytic_deviation`` the largest difference from the analytic
        (coupled-perturbed) α relative to α_iso (≲ 1e-4);
      * ``esp_points`` (M, 3) Å — Merz–Kollman shells (1.4–2.0 × vdW radius, ≈1 point/Å²,
        the shells of the training set's ``esp_rmse``);
      * ``esp`` (M,) V (= eV/e) — the exact PBE electrostatic potential of nuclei and
        electrons there (× 1000/27.211386 for mHa/e, the unit of
        :func:`jaxlr.train.esp_rmse`);
      * ``n_waters``, ``rattled``, ``temperature_K``, ``structure_id`` and the provenance
        (``level``, ``basis``, ``auxbasis``, ``grid_level``, ``conv_tol``, ``field_au``…).

      The arrays are read-only (the parsed file is shared within the process).

    Raises:
      FileNotFoundError: if the data file is not bundled (it is made by
        ``python -m jaxlr.data.generate.water_response``).
      ValueError: for an ``n_waters`` with no cluster, or a frame lacking one of the values
        above (another file under this name).

    Example:
      >>> ds = load_water_response()
      >>> len(ds), ds.species, ds.available_targets()
      (30, (1, 8), ('energy', 'dipole'))
      >>> s = load_water_response(n_waters=1)[0]
      >>> s.info["polarizability"].shape, s.info["esp_points"].shape[1], s.info["basis"]
      ((3, 3), 3, 'def2-svpd')
    """
    try:
        data_path(WATER_RESPONSE)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} The water response set is made by "
                                "'python -m jaxlr.data.generate.water_response all --dest "
                                f"jaxlr/data/files/{WATER_RESPONSE}'.") from None
    structures = select_n_waters(read_cached(WATER_RESPONSE, ":", False), n_waters, "the response set holds n = 1–6")
    out = []
    for k, s in enumerate(structures):
        info = dict(s.info)
        for key, shape in RESPONSE_KEYS.items():
            if key not in info:
                raise ValueError(f"response-set frame {k} ({info.get('structure_id', '?')}) has no {key!r}; "
                                 f"the file {WATER_RESPONSE} is not the response set.")
            info[key] = _frozen(info[key], shape, f"frame {k}: {key}")
        if info["esp"].shape[0] != info["esp_points"].shape[0]:
            raise ValueError(f"frame {k}: {info['esp'].shape[0]} potentials for {info['esp_points'].shape[0]} points.")
        out.append(s.replace(info=info))
    return Dataset(out)

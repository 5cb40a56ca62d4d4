"""Electrostatic judges of a predicted density: potential errors on Merz–Kollman shells.

A density model's coefficients are judged as the reference coefficients were fitted: by
the electrostatic potential they produce outside the molecule.  :func:`esp_rmse` compares
two s + p Gaussian densities on the Merz–Kollman shells (:func:`jaxlr.system.merz_kollman_points`);
:func:`density_esp_errors` runs a model over a data set and returns, per structure, the
ESP RMSE of its density against the reference density (mHa/e), with the reference fit's
own error against the exact quantum-chemical potential (``info["esp_rmse"]`` of the water
clusters) beside it, so that "within 2× of the reference fit" can be read off.
"""

from __future__ import annotations

import numpy as np

from ..electrostatics import density_esp
from ..system import merz_kollman_points

__all__ = ["HARTREE_EV", "esp_rmse", "density_esp_errors"]

#: eV per Hartree (CODATA 2018)
HARTREE_EV = 27.211386245988


def _split(widths, coefficients):
    widths = np.asarray(widths, dtype=np.float64)
    coefficients = np.asarray(coefficients, dtype=np.float64)
    n_shells, n_basis = widths.shape[1], coefficients.shape[1]
    n_s, rest = divmod(3 * n_shells - n_basis, 2)
    if rest or not 0 <= n_s <= n_shells:
        raise ValueError(f"{n_shells} widths per atom do not fit {n_basis} coefficients (n_s + 3 n_p).")
    return coefficients, widths[:, :n_s], widths[:, n_s:]


def esp_rmse(positions, numbers, coefficients_a, widths_a, coefficients_b, widths_b, *, points=None) -> float:
    """RMS difference of the electrostatic potentials of two densities on the MK shells (mHa/e).

    Args:
      positions: (N, 3) Å.  numbers: (N,) atomic numbers (for the shell radii).
      coefficients_a: (N, n_s + 3 n_p) e, e·Å.  widths_a: (N, n_s + n_p) Å (s shells then
        p shells, the layout of ``ModelOutput.basis_widths``).
      coefficients_b, widths_b: the second density, in any basis.
      points: (M, 3) Å evaluation points instead of the default shells.

    Returns:
      RMSE in mHa/e (1 mHa/e = 27.2 mV).

    Example:
      >>> import numpy as np
      >>> R = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
      >>> c = np.array([[-0.8], [0.4], [0.4]]); w = np.full((3, 1), 0.4)
      >>> esp_rmse(R, [8, 1, 1], c, w, c, w)
      0.0
      >>> round(esp_rmse(R, [8, 1, 1], c, w, 0.9 * c, w), 1)    # 10 % smaller charges
      2.3
    """
    positions = np.asarray(positions, dtype=np.float64)
    if points is None:
        points = merz_kollman_points(positions, numbers)
    ca, sa, pa = _split(widths_a, coefficients_a)
    cb, sb, pb = _split(widths_b, coefficients_b)
    va = np.asarray(density_esp(points, positions, ca, sa, pa))
    vb = np.asarray(density_esp(points, positions, cb, sb, pb))
    return float(np.sqrt(np.mean((va - vb) ** 2)) / HARTREE_EV * 1000.0)


def density_esp_errors(potential, variables, dataset, *, batch_size: int = 16) -> dict:
    """ESP errors of a density model's predictions against a data set's reference densities.

    Args:
      potential, variables: a model that predicts ``coefficients`` (the density model).
      dataset: structures with a ``coefficients`` target and ``info["basis_widths"]``
        (e.g. :func:`jaxlr.data.load_water_clusters`).
      batch_size: structures per batch.

    Returns:
      ``{"model": (S,) mHa/e, "reference_fit": (S,) mHa/e or NaN where unknown}``: per
      structure, the RMSE of the predicted density's potential against the reference
      density's on the Merz–Kollman shells, and the reference fit's own RMSE against the
      exact potential (``info["esp_rmse"]``).

    Raises:
      ValueError: if the model predicts no coefficients or the data lack their widths.
    """
    from ..data._batching import BatchLoader

    if "coefficients" not in potential.predicts:
        raise ValueError(f"the model predicts no density coefficients (it predicts {potential.predicts}).")
    structures = list(dataset)
    missing = [k for k, s in enumerate(structures) if s.info.get("basis_widths") is None
               or "coefficients" not in s.targets]
    if missing:
        raise ValueError(f"structures {missing[:5]} lack coefficients or info['basis_widths'] (the reference "
                         "density's basis).")
    loader = BatchLoader(structures, potential.species, cutoff=potential.cutoff, batch_size=batch_size)
    errors = np.full(len(structures), np.nan)
    for atoms, _, indices in loader.epoch(None, with_indices=True):
        out = potential.predict(variables, atoms, forces=False)
        for b, i in enumerate(np.asarray(indices)):
            if i < 0:
                continue
            s = structures[int(i)]
            n = s.n_atoms
            errors[i] = esp_rmse(s.positions, s.numbers, np.asarray(out.coefficients[b, :n]),
                                 np.asarray(out.basis_widths[b, :n]), s.targets["coefficients"],
                                 s.info["basis_widths"])
    fits = np.array([float(s.info.get("esp_rmse", np.nan)) for s in structures])
    return {"model": errors, "reference_fit": fits}

"""Electrostatic judges of a predicted density: potential errors on Merz–Kollman shells.

A density model's coefficients are judged as the reference coefficients were fitted: by
the electrostatic potential they produce outside the molecule.  :func:`esp_rmse` compares
two s + p Gaussian densities on the Merz–Kollman shells (:func:`jaxlr.system.merz_kollman_points`);
:func:`esp_rmse_exact` compares one with a given potential, e.g. the exact PBE potential of
:func:`jaxlr.data.load_water_esp`.  :func:`density_esp_errors` runs a model — a density
model, or a charge model (latent, Qeq) whose charges are taken as Gaussians — over a data
set and returns, per structure, the ESP RMSE of its density against the reference density
(mHa/e), the reference fit's own error against the exact quantum-chemical potential
(``info["esp_rmse"]`` of the water clusters) beside it, so that "within 2× of the reference
fit" can be read off, and, given the exact potentials, both against them.
"""

from __future__ import annotations

import jax
import numpy as np

from ..electrostatics import density_esp
from ..system import merz_kollman_points

__all__ = ["HARTREE_EV", "esp_rmse", "esp_rmse_exact", "density_esp_errors"]

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


#: density_esp compiled once per padded shape: eagerly, every new number of points or atoms
#: recompiles each primitive (2–5 s a structure on a loaded 2-core machine, against 1 ms)
_density_esp = jax.jit(density_esp)
POINT_BUCKET, ATOM_BUCKET = 512, 8


def _potential(points, positions, widths, coefficients) -> np.ndarray:
    """(M,) potential in V of a density at points (Å), padded to bucketed shapes for one compile."""
    c, sigma_s, sigma_p = _split(widths, coefficients)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    m, n = len(points), len(positions)
    pad_m, pad_n = -m % POINT_BUCKET, -n % ATOM_BUCKET
    pts = np.concatenate([points, np.repeat(points[:1], pad_m, axis=0)])
    far = 1e3 * (1.0 + np.arange(pad_n))[:, None] * np.array([[1.0, 0.0, 0.0]])   # inactive atoms, apart
    grow = lambda a: np.concatenate([a, np.ones((pad_n, a.shape[1]))])             # noqa: E731
    active = np.arange(n + pad_n) < n
    v = _density_esp(pts, np.concatenate([positions, far]), np.concatenate([c, np.zeros((pad_n, c.shape[1]))]),
                     grow(sigma_s), grow(sigma_p), active=active)
    return np.asarray(v)[:m]


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
    va = _potential(points, positions, widths_a, coefficients_a)
    vb = _potential(points, positions, widths_b, coefficients_b)
    return float(np.sqrt(np.mean((va - vb) ** 2)) / HARTREE_EV * 1000.0)


def esp_rmse_exact(positions, coefficients, widths, points, esp) -> float:
    """RMS difference between the potential of an s + p Gaussian density and a given potential (mHa/e).

    ``sqrt(mean_m (V_density(x_m) − V(x_m))²)`` over the points, e.g. a model's density
    against the exact quantum-chemical potential of :func:`jaxlr.data.load_water_esp`.

    Args:
      positions: (N, 3) Å.
      coefficients: (N, n_s + 3 n_p) e, e·Å (for point-like charges: (N, 1) charges).
      widths: (N, n_s + n_p) Å, s shells then p shells (``ModelOutput.basis_widths``).
      points: (M, 3) Å.
      esp: (M,) the reference potential at the points, Hartree/e (atomic units).

    Returns:
      RMSE in mHa/e (1 mHa/e = 27.2 mV).

    Raises:
      ValueError: if the points are not (M, 3) with M ≥ 1 or ``esp`` is not (M,).

    Example:
      >>> import numpy as np
      >>> pts = np.array([[0.0, 0.0, 3.0], [0.0, 4.0, 0.0]])
      >>> coulomb = 0.529177210903 / np.linalg.norm(pts, axis=1)    # 1/r (bohr) in Hartree/e
      >>> charge, width = np.array([[1.0]]), np.array([[0.1]])       # a compact unit charge
      >>> round(esp_rmse_exact(np.zeros((1, 3)), charge, width, pts, coulomb), 3)
      0.0
      >>> round(esp_rmse_exact(np.zeros((1, 3)), 0.9 * charge, width, pts, coulomb), 2)
      15.59
    """
    points = np.asarray(points, dtype=np.float64)
    esp = np.asarray(esp, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or esp.shape != points.shape[:1]:
        raise ValueError(f"points must be (M, 3) with M >= 1 and esp (M,); got {points.shape} and {esp.shape}.")
    v = _potential(points, positions, widths, coefficients)
    return float(np.sqrt(np.mean((v / HARTREE_EV - esp) ** 2)) * 1000.0)


def _charge_width_table(potential, variables, charge_widths):
    """Per-species widths (S,) Å of a charge model's Gaussian charges."""
    n_species = len(potential.species)
    if isinstance(charge_widths, str):
        if charge_widths != "model":
            raise ValueError(f"charge_widths must be a width in Å or 'model', got {charge_widths!r}.")
        table = np.asarray(potential.gaussian_widths(variables), dtype=np.float64)
        if table.shape != (n_species,):
            raise ValueError(f"charge_widths='model' needs one learned width per species; the {potential.name!r} "
                             f"model has {table.size}.  Pass a width in Å instead.")
        return table
    width = float(charge_widths)
    if not (np.isfinite(width) and width > 0):
        raise ValueError(f"charge_widths must be a positive width in Å or 'model', got {charge_widths!r}.")
    return np.full(n_species, width)


def _checked_exact(exact) -> dict:
    out = {}
    for key, value in exact.items():
        try:
            points, esp = value
        except (TypeError, ValueError):
            raise ValueError(f"exact[{key!r}] must be a pair (points (M, 3) Å, esp (M,) Hartree/e).") from None
        points, esp = np.asarray(points, dtype=np.float64), np.asarray(esp, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or esp.shape != points.shape[:1] or len(esp) == 0:
            raise ValueError(f"exact[{key!r}]: points must be (M, 3) and esp (M,) with M >= 1; got "
                             f"{points.shape} and {esp.shape}.")
        out[key] = (points, esp)
    return out


def density_esp_errors(potential, variables, dataset, *, batch_size: int = 16, exact=None,
                       charge_widths=0.1) -> dict:
    """ESP errors of a model's charge density against the reference densities and the exact potentials.

    The model's density is its predicted ``coefficients`` in its own basis (density model)
    or, for a charge model (latent, Qeq), its atomic charges as Gaussians of
    ``charge_widths``: a width in Å (the default 0.1 Å makes them point charges on the
    shells, where erf(r/(√2σ)) = 1 to machine precision), or ``"model"`` for the model's
    own learned per-species σ_Z (the density of its Coulomb energy).

    Args:
      potential, variables: a model that predicts ``coefficients`` or ``charges``.
      dataset: structures; those with a ``coefficients`` target and ``info["basis_widths"]``
        (e.g. :func:`jaxlr.data.load_water_clusters`) are compared with that reference
        density, those whose ``info["structure_id"]`` is a key of ``exact`` with the exact
        potential.
      batch_size: structures per batch.
      exact: ``{structure_id: (points (M, 3) Å, esp (M,) Hartree/e)}``, e.g.
        :func:`jaxlr.data.load_water_esp`, or None.
      charge_widths: see above (charge models only).

    Returns:
      per structure, arrays (S,) in mHa/e, NaN where the comparison is not possible:

      * ``"model"`` — RMSE of the model density's potential against the reference
        density's on the Merz–Kollman shells (:func:`esp_rmse`);
      * ``"reference_fit"`` — the reference fit's own RMSE against the exact potential as
        stored with the data (``info["esp_rmse"]``);

      and with ``exact``:

      * ``"model_vs_exact"`` — RMSE of the model density's potential against the exact
        one on the exact potential's points (:func:`esp_rmse_exact`);
      * ``"fit_vs_exact"`` — the same for the reference density (``coefficients``): it
        reproduces ``"reference_fit"`` when both were made on the same points.

    Raises:
      ValueError: if the model predicts neither coefficients nor charges, a charge width
        is invalid, a structure lacks a reference density while ``exact`` is None, an
        ``exact`` entry is malformed, or ``exact`` covers none of the structures.

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.data import Dataset, load_water_esp, water_cluster_splits
      >>> from jaxlr.models import build_potential
      >>> from jaxlr.testing import toy_batch
      >>> pot = build_potential("qeq", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=(4,), chi_hidden=(4,))
      >>> v = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
      >>> test = Dataset(list(water_cluster_splits()[2])[:3])
      >>> errs = density_esp_errors(pot, v, test, exact=load_water_esp())
      >>> sorted(errs), errs["model_vs_exact"].shape
      (['fit_vs_exact', 'model', 'model_vs_exact', 'reference_fit'], (3,))
      >>> bool(np.abs(errs["fit_vs_exact"] - errs["reference_fit"]).max() < 0.01)   # the stored esp_rmse
      True
    """
    from ..data._batching import BatchLoader

    has_density = "coefficients" in potential.predicts
    if not has_density and "charges" not in potential.predicts:
        raise ValueError(f"the model predicts neither density coefficients nor charges (it predicts "
                         f"{potential.predicts}).")
    table = None if has_density else _charge_width_table(potential, variables, charge_widths)
    structures = list(dataset)
    has_ref = [s.info.get("basis_widths") is not None and "coefficients" in s.targets for s in structures]
    if exact is None and not all(has_ref):
        missing = [k for k, ok in enumerate(has_ref) if not ok]
        raise ValueError(f"structures {missing[:5]} lack coefficients or info['basis_widths'] (the reference "
                         "density's basis).")
    if exact is not None:
        exact = _checked_exact(exact)
        ids = [s.info.get("structure_id") for s in structures]
        if not any(i in exact for i in ids):
            raise ValueError(f"exact covers none of the {len(structures)} structures (their structure_id "
                             f"{ids[:3]}…, exact has {sorted(exact)[:3]}…).")
    errors = {key: np.full(len(structures), np.nan) for key in
              ("model",) + (() if exact is None else ("model_vs_exact", "fit_vs_exact"))}
    loader = BatchLoader(structures, potential.species, cutoff=potential.cutoff, batch_size=batch_size)
    species = np.asarray(potential.species)
    for atoms, _, indices in loader.epoch(None, with_indices=True):
        out = potential.predict(variables, atoms, forces=False)
        for b, i in enumerate(np.asarray(indices)):
            if i < 0:
                continue
            s = structures[int(i)]
            n = s.n_atoms
            if has_density:
                coef, widths = np.asarray(out.coefficients[b, :n]), np.asarray(out.basis_widths[b, :n])
            else:
                coef = np.asarray(out.charges[b, :n])[:, None]
                widths = table[np.searchsorted(species, np.asarray(s.numbers))][:, None]
            if has_ref[i]:
                errors["model"][i] = esp_rmse(s.positions, s.numbers, coef, widths, s.targets["coefficients"],
                                              s.info["basis_widths"])
            sid = s.info.get("structure_id")
            if exact is not None and sid in exact:
                points, esp = exact[sid]
                errors["model_vs_exact"][i] = esp_rmse_exact(s.positions, coef, widths, points, esp)
                if has_ref[i]:
                    errors["fit_vs_exact"][i] = esp_rmse_exact(s.positions, s.targets["coefficients"],
                                                               s.info["basis_widths"], points, esp)
    fits = np.array([float(s.info.get("esp_rmse", np.nan)) for s in structures])
    out = {"model": errors["model"], "reference_fit": fits}
    if exact is not None:
        out.update(model_vs_exact=errors["model_vs_exact"], fit_vs_exact=errors["fit_vs_exact"])
    return out

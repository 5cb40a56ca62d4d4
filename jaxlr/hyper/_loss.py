"""Validation losses as pure functions of the hyperparameters: ``loss(hyper, data) -> scalar``.

* :func:`ridge_cv_loss` — the k-fold cross-validation RMSE of a closed-form (ridge) model
  on LODE ⊕ ρ⊗V or local features.  Differentiable in σ_L (``lode_sigma``), the local
  density width (``density_sigma`` / ``local_sigma``), the GTO radial widths
  (``radial_scale`` multiplies them: one factor for all, or a (max_radial,) array, one
  factor — hence one width — per radial function), the smoothness of the radial cutoff switch
  (``cutoff_width``) and the log-regulariser (``log_lambda``).  Static, hence not
  differentiable: the cutoff (it fixes the neighbour capacity), the basis sizes, the
  species and the folds.
* :func:`qeq_loss` — the RMS error of charge-equilibration charges (or dipoles) against
  reference values, differentiable in the per-species hardness J, Gaussian width σ and
  electronegativity χ (held fixed unless it is in ``hyper``), through the implicit Qeq
  solve.  Static: the solver and the open boundary.

Both are jittable (``jax.jit(loss)``) and differentiable with ``jax.grad`` in ``hyper``;
the data are pytrees built once on the host (:func:`ridge_data`, :func:`qeq_data`).
Bad hyperparameters (a non-positive width, a cutoff switch wider than the cutoff) raise a
``ValueError`` before anything is compiled (:func:`check_hyper`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data._batching import BatchLoader
from ..equilibration._qeq import qeq_solve
from ..system._checks import concrete_value
from ..system._neighbors import Neighbors
from ._features import FEATURE_KINDS, FeatureSpec, FlatStructures, flat_features, flatten_structures
from ._ridge import kfold_cv_error, kfold_indices, ridge_fit

__all__ = ["HYPER_DOMAINS", "QEQ_TARGETS", "QeqData", "RidgeData", "check_hyper", "qeq_data", "qeq_loss", "ridge_cv_errors",
           "ridge_cv_loss", "ridge_data", "ridge_predictions"]

#: the hyperparameters each loss is differentiable in, and their domains
HYPER_DOMAINS = {
    "lode_sigma": "> 0 Å", "density_sigma": "> 0 Å", "local_sigma": "> 0 Å",
    "radial_scale": "> 0 (one factor, or one per radial function)",
    "cutoff_width": "in (0, cutoff] Å", "log_lambda": "real (log of the relative regulariser)",
    "hardness": "≥ 0 V/e per species", "sigma": "> 0 Å per species", "electronegativity": "real V per species",
    "s_widths": "> 0 Å per species and s function", "p_widths": "> 0 Å per species and p function",
    "shell_hardness": "> 0 per species and shell (V/e for s shells, V/(e·Å²) for p shells)",
    "linear": "real V per species and s function",
}
#: what :func:`qeq_loss` can fit
QEQ_TARGETS = ("charges", "dipole", "fragment_charges")
_PER_SPECIES = ("hardness", "sigma", "electronegativity")
_PER_SHELL = ("s_widths", "p_widths", "shell_hardness", "linear")
_POSITIVE = ("lode_sigma", "density_sigma", "local_sigma", "radial_scale", "sigma", "s_widths", "p_widths",
             "shell_hardness")
_RIDGE_KEYS = {"lode": ("lode_sigma", "density_sigma", "radial_scale", "cutoff_width", "log_lambda"),
               "local": ("local_sigma", "radial_scale", "cutoff_width", "log_lambda")}


def check_hyper(hyper, *, keys=(), cutoff: float | None = None, n_species: int | None = None, data=None) -> None:
    """Raise ``ValueError`` for hyperparameters outside their domain (host; traced values pass).

    Under ``jax.jit`` the values are tracers and only names and shapes can be checked, so
    :func:`jaxlr.hyper.optimize` and :func:`jaxlr.hyper.grid_search` run this on the
    concrete values before they compile anything (and on every point they visit).

    Args:
      hyper: mapping of hyperparameter name to value.  keys: names that must be present.
      cutoff: the features' cutoff (Å), bounding ``cutoff_width``.  n_species: the length of
        per-species arrays (the rows of per-shell ones).
      data: a :class:`RidgeData`, :class:`QeqData` or :class:`DensityData`, from which
        ``cutoff``, ``n_species`` and the per-shell shapes (``data.hyper_shapes``, whose keys
        are then the only hyperparameters accepted) are taken when not given.

    Example:
      >>> check_hyper({"lode_sigma": -1.0})
      Traceback (most recent call last):
      ...
      ValueError: hyperparameter lode_sigma must be > 0 Å, got -1.0.
    """
    shapes = {}
    max_radial = None
    if isinstance(data, RidgeData):
        cutoff = data.spec.cutoff if cutoff is None else cutoff
        max_radial = data.spec.max_radial
    elif isinstance(data, QeqData) or hasattr(data, "hyper_shapes"):
        n_species = data.n_species if n_species is None else n_species
        shapes = dict(getattr(data, "hyper_shapes", {}))
    missing = [k for k in keys if k not in hyper]
    if missing:
        raise ValueError(f"hyper lacks {missing}; this loss needs {list(keys)}.")
    if shapes and any(k not in shapes for k in hyper):
        raise ValueError(f"{type(data).__name__} takes the hyperparameters {list(shapes)}, not "
                         f"{[k for k in hyper if k not in shapes]}.")
    unknown = [k for k in hyper if k not in HYPER_DOMAINS]
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(HYPER_DOMAINS)}.")
    for name, value in hyper.items():
        v = _concrete(value)
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"hyperparameter {name} must be finite, got {value!r}.")
        if name in _PER_SPECIES:
            if n_species is not None and v.shape != (n_species,):
                raise ValueError(f"hyperparameter {name} needs one value per species ({n_species}), got shape "
                                 f"{v.shape}.")
        elif name in _PER_SHELL:
            if name in shapes and v.shape != tuple(shapes[name]):
                raise ValueError(f"hyperparameter {name} must have shape {tuple(shapes[name])} (species, shells), "
                                 f"got shape {v.shape}.")
            if v.ndim != 2 or (n_species is not None and v.shape[0] != n_species):
                raise ValueError(f"hyperparameter {name} needs one row per species ({n_species}) and one column per "
                                 f"shell, got shape {v.shape}.")
        elif name == "radial_scale" and v.ndim == 1:
            if max_radial is not None and v.shape != (max_radial,):
                raise ValueError(f"hyperparameter radial_scale must be a scalar or one factor per radial function "
                                 f"(max_radial = {max_radial}), got shape {v.shape}.")
        elif v.ndim:
            raise ValueError(f"hyperparameter {name} must be a scalar, got shape {v.shape}.")
        if name in _POSITIVE and np.any(v <= 0):
            raise ValueError(f"hyperparameter {name} must be {HYPER_DOMAINS[name]}, got {value!r}.")
        if name == "hardness" and np.any(v < 0):
            raise ValueError(f"hyperparameter hardness must be ≥ 0 (V/e), got {value!r}.")
        if name == "cutoff_width" and (np.any(v <= 0) or (cutoff is not None and np.any(v > cutoff))):
            raise ValueError(f"hyperparameter cutoff_width must lie in (0, cutoff = {cutoff}] Å, got {value!r}.")


def _concrete(value):
    """The host value of a hyperparameter, or None when any part of it is traced (e.g. the
    per-species (nested) lists of :attr:`HyperTrajectory.best` passed to a jitted loss)."""
    if isinstance(value, (list, tuple)):
        parts = [_concrete(v) for v in value]
        return None if any(p is None for p in parts) else np.asarray(parts)
    return concrete_value(value)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RidgeData:
    """A data set prepared for :func:`ridge_cv_loss` (a pytree; build with :func:`ridge_data`).

    Attributes:
      batches: padded open-boundary :class:`jaxlr.data.AtomsBatch` es covering the M structures
        (for :func:`jaxlr.hyper.structure_features`; the loss uses ``flat``).
      flat: :class:`jaxlr.hyper.FlatStructures` of the same M structures (real atoms and
        pairs only), from which :meth:`design` computes the features.
      combine: (K, M) rows of targets as combinations of structures (identity for plain
        energies; dimer − monomer A − monomer B for binding energies).
      y: (K,) reference targets (eV).
      force_atoms: (F,) flat atom index of each force row (empty without forces).
      force_axis: (F,) Cartesian component (0, 1, 2) of each force row.
      force_targets: (F,) reference force components (eV/Å).
      spec: :class:`FeatureSpec` (static).
      slots: per batch, the structure index of each batch row, −1 for padding (static).
      fold_ids: (K,) fold label of each target row, −1 for rows left out of the
        cross-validation (static).
      force_fold_ids: (F,) fold label of each force row (its structure's, static).
      force_weight: weight of the force error in the loss (Å; 0: energies only, static).
    """

    batches: tuple
    flat: FlatStructures
    combine: jax.Array
    y: jax.Array
    force_atoms: jax.Array
    force_axis: jax.Array
    force_targets: jax.Array
    spec: FeatureSpec = dataclasses.field(metadata=dict(static=True))
    slots: tuple = dataclasses.field(metadata=dict(static=True))
    fold_ids: tuple = dataclasses.field(metadata=dict(static=True))
    force_fold_ids: tuple = dataclasses.field(default=(), metadata=dict(static=True))
    force_weight: float = dataclasses.field(default=0.0, metadata=dict(static=True))

    def features(self, hyper) -> jax.Array:
        """(M, S·D) per-structure feature sums for ``hyper`` (jittable)."""
        return flat_features(self.flat, hyper, self.spec)

    def design(self, hyper) -> jax.Array:
        """(K, S·D) design matrix of the target rows for ``hyper`` (jittable)."""
        feats = self.features(hyper)
        return self.combine.astype(feats.dtype) @ feats

    def force_design(self, hyper) -> jax.Array:
        """(F, S·D) force rows −∂(structure features)/∂R for ``hyper`` (jittable).

        Forward mode, one tangent per (atom slot, axis) shared by all structures — a
        structure's features depend on its own atoms only — so 3 × the largest atom count
        Jacobian-vector products, each about the cost of a feature evaluation.
        """
        flat = self.flat
        dtype = flat.positions.dtype
        slots = np.arange(flat.max_atoms)
        onehot_slot = (flat.slot[None, :] == jnp.asarray(slots)[:, None]).astype(dtype)     # (n_max, A)
        tangents = (onehot_slot[:, None, :, None] * jnp.eye(3, dtype=dtype)[None, :, None, :]
                    ).reshape(-1, flat.positions.shape[0], 3)                             # (3 n_max, A, 3)

        def column(t):
            return jax.jvp(lambda r: flat_features(flat, hyper, self.spec, positions=r), (flat.positions,), (t,))[1]

        jac = jax.lax.map(column, tangents)                                               # (3 n_max, M, SD)
        a = self.force_atoms
        return -jac[flat.slot[a] * 3 + self.force_axis, flat.structure[a]]


def ridge_data(dataset, y=None, *, combine=None, kind: str = "lode", cutoff: float = 3.0, max_radial: int = 4,
               max_angular: int = 0, species=None, folds: int = 5, cv_rows=None, seed: int = 0,
               batch_size: int = 64, dtype=None, force_weight: float | None = None) -> RidgeData:
    """Pad a data set for :func:`ridge_cv_loss` (host).

    Args:
      dataset: :class:`jaxlr.data.Dataset` (or list of :class:`jaxlr.data.Structure`), open
        boundary, M structures.
      y: (K,) targets in eV; default the structures' energies (K = M).
      combine: (K, M) target rows as combinations of structures; default the identity.
      kind: "lode" or "local".  cutoff (Å), max_radial, max_angular: static basis choices.
      species: atomic numbers of the channels (default the data set's).
      folds: number of cross-validation folds (2 ≤ folds ≤ number of CV rows).
      cv_rows: (K,) bool, the rows that take part in the cross-validation (default all).
      seed: shuffles the fold assignment.  batch_size, dtype: padding.
      force_weight: None or 0 (default): energies only.  A positive weight w (Å) adds
        the force components of every structure with a ``"forces"`` target as rows of
        the fit and of the loss, √(MSE_E + w² MSE_F) (:func:`kfold_cv_error`).  A
        structure's force rows take the fold of the first cross-validation row it enters
        (with the identity ``combine``, its own energy's fold); a structure in no CV row
        has its forces left out.

    Returns:
      :class:`RidgeData`.

    Raises:
      ValueError: periodic structures, an unknown kind, a bad shape, too many folds, a
        negative or non-finite force weight, forces asked for but none in the data.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> rng = np.random.default_rng(0)
      >>> ds = Dataset([Structure(positions=rng.normal(size=(3, 3)), numbers=[1, 1, 8], targets={"energy": e})
      ...               for e in rng.normal(size=6)])
      >>> d = ridge_data(ds, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3)
      >>> d.y.shape, len(d.fold_ids)
      ((6,), 6)
    """
    from ..data._dataset import Dataset

    structures = list(dataset)
    if kind not in FEATURE_KINDS:
        raise ValueError(f"kind must be one of {FEATURE_KINDS}, got {kind!r}.")
    if any(s.periodic for s in structures):
        raise ValueError("ridge_data supports open-boundary structures only (periodic LODE needs a mesh plan).")
    m = len(structures)
    if y is None:
        if any("energy" not in s.targets for s in structures):
            raise ValueError("without y= every structure needs an 'energy' target.")
        y = np.array([float(s.targets["energy"]) for s in structures])
    y = np.asarray(y, np.float64)
    combine = np.eye(m) if combine is None else np.asarray(combine, np.float64)
    if combine.shape != (y.shape[0], m):
        raise ValueError(f"combine must have shape (len(y), number of structures) = ({y.shape[0]}, {m}), "
                         f"got {combine.shape}.")
    cv = np.ones(y.shape[0], bool) if cv_rows is None else np.asarray(cv_rows, bool)
    fold_ids = np.full(y.shape[0], -1, np.int32)
    fold_ids[cv] = kfold_indices(int(cv.sum()), folds, seed=seed)
    ds = Dataset(structures)
    species = tuple(ds.species) if species is None else tuple(species)
    weight = 0.0 if force_weight is None else float(force_weight)
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"force_weight must be None or a non-negative number (Å), got {force_weight!r}.")
    f_atoms, f_axis, f_targets, f_folds = [], [], [], []
    if weight > 0:
        offsets = np.cumsum([0] + [s.n_atoms for s in structures])
        for m, s in enumerate(structures):
            rows = np.flatnonzero((combine[:, m] != 0) & (fold_ids >= 0))
            if "forces" not in s.targets or not rows.size:
                continue
            forces = np.asarray(s.targets["forces"], np.float64).reshape(s.n_atoms, 3)
            f_atoms.append(np.repeat(offsets[m] + np.arange(s.n_atoms), 3))
            f_axis.append(np.tile(np.arange(3), s.n_atoms))
            f_targets.append(forces.ravel())
            f_folds.append(np.full(3 * s.n_atoms, fold_ids[rows[0]]))
        if not f_atoms:
            raise ValueError("force_weight > 0, but no structure of the cross-validation rows has a 'forces' target.")
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
    loader = BatchLoader(ds, species, cutoff=float(cutoff), batch_size=batch_size, dtype=dtype, max_shapes=1)
    batches, slots = [], []
    for atoms, _, idx in loader.epoch(None, with_indices=True):
        batches.append(atoms)
        slots.append(tuple(int(i) for i in idx))
    spec = FeatureSpec(kind, float(cutoff), int(max_radial), int(max_angular), len(species))
    dt = batches[0].positions.dtype
    flat = flatten_structures(structures, species, cutoff=float(cutoff), dtype=dt)
    return RidgeData(batches=tuple(batches), flat=flat, combine=jnp.asarray(combine, dt), y=jnp.asarray(y, dt),
                     force_atoms=jnp.asarray(cat(f_atoms, np.int32)), force_axis=jnp.asarray(cat(f_axis, np.int32)),
                     force_targets=jnp.asarray(cat(f_targets, np.float64), dt), spec=spec, slots=tuple(slots),
                     fold_ids=tuple(int(f) for f in fold_ids),
                     force_fold_ids=tuple(int(f) for f in cat(f_folds, np.int64)), force_weight=weight)


def ridge_cv_loss(hyper, data: RidgeData):
    """k-fold cross-validation RMSE (eV) of a ridge model on the features of ``hyper`` (jittable).

    Args:
      hyper: mapping of traced scalars — ``radial_scale`` (or a (max_radial,) array of
        per-function factors), ``cutoff_width`` (Å), ``log_lambda`` and ``lode_sigma``,
        ``density_sigma`` (kind "lode") or ``local_sigma`` (kind "local").
      data: :class:`RidgeData` from :func:`ridge_data`.

    Returns:
      () RMS of the held-out errors over all folds, in the units of ``data.y``.

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> rng = np.random.default_rng(0)
      >>> ds = Dataset([Structure(positions=rng.normal(size=(3, 3)), numbers=[1, 1, 8], targets={"energy": e})
      ...               for e in rng.normal(size=6)])
      >>> d = ridge_data(ds, kind="local", cutoff=3.0, max_radial=2, max_angular=1, folds=3)
      >>> h = dict(local_sigma=0.5, radial_scale=1.0, cutoff_width=0.5, log_lambda=-3.0)
      >>> g = jax.grad(ridge_cv_loss)(h, d)
      >>> sorted(g)
      ['cutoff_width', 'local_sigma', 'log_lambda', 'radial_scale']
    """
    check_hyper(hyper, keys=_RIDGE_KEYS[data.spec.kind], data=data)
    return kfold_cv_error(data.design(hyper), data.y, hyper["log_lambda"], np.asarray(data.fold_ids),
                          **_force_terms(hyper, data))


def _force_terms(hyper, data: RidgeData) -> dict:
    if not data.force_weight:
        return {}
    return dict(derivative_rows=data.force_design(hyper), derivative_targets=data.force_targets,
                derivative_fold_ids=np.asarray(data.force_fold_ids), derivative_weight=data.force_weight)


def ridge_cv_errors(hyper, data: RidgeData) -> dict:
    """The cross-validation errors of :func:`ridge_cv_loss` by kind (jittable).

    Returns:
      ``{"loss": …, "energy": RMSE (eV), "forces": RMSE (eV/Å; 0 without forces)}``.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> rng = np.random.default_rng(0)
      >>> ds = Dataset([Structure(positions=rng.normal(size=(3, 3)), numbers=[1, 1, 8],
      ...                         targets={"energy": e, "forces": rng.normal(size=(3, 3))}) for e in rng.normal(size=6)])
      >>> d = ridge_data(ds, kind="local", cutoff=3.0, max_radial=2, max_angular=0, folds=3, force_weight=0.5)
      >>> e = ridge_cv_errors(dict(local_sigma=0.5, radial_scale=1.0, cutoff_width=0.5, log_lambda=-3.0), d)
      >>> bool(abs(e["loss"] ** 2 - e["energy"] ** 2 - 0.25 * e["forces"] ** 2) < 1e-9)
      True
    """
    check_hyper(hyper, keys=_RIDGE_KEYS[data.spec.kind], data=data)
    terms = _force_terms(hyper, data)
    loss, energy, forces = kfold_cv_error(data.design(hyper), data.y, hyper["log_lambda"], np.asarray(data.fold_ids),
                                          parts=True, **terms)
    return {"loss": loss, "energy": energy, "forces": forces}


def ridge_predictions(hyper, data: RidgeData, rows=None):
    """Predictions of the ridge model fitted on the CV rows of ``data`` (all folds), for every row.

    Args:
      hyper: as :func:`ridge_cv_loss`.  data: :class:`RidgeData`.
      rows: (K,) bool of the rows to fit (default: the cross-validation rows).

    Returns:
      (K,) predicted targets (e.g. to score a held-out far set).
    """
    check_hyper(hyper, keys=_RIDGE_KEYS[data.spec.kind], data=data)
    A = data.design(hyper)
    fit_rows = np.asarray(data.fold_ids) >= 0 if rows is None else np.asarray(rows, bool)
    extra = {}
    if data.force_weight:
        used = np.asarray(data.force_fold_ids) >= 0
        c2 = data.force_weight**2 * fit_rows.sum() / max(int(used.sum()), 1)
        extra = dict(derivative_rows=data.force_design(hyper), derivative_targets=data.force_targets,
                     derivative_weights=jnp.asarray(c2 * used, A.dtype))
    theta, mean, scale, offset = ridge_fit(A, data.y, hyper["log_lambda"], weights=fit_rows.astype(float), **extra)
    return ((A - mean) / scale) @ theta + offset


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QeqData:
    """Open-boundary structures with reference charges or dipoles, for :func:`qeq_loss` (a pytree).

    Attributes:
      batches: padded :class:`jaxlr.data.AtomsBatch` es (species channels, fragments).
      references: per batch, (B, N) reference charges or (B, 3) reference dipoles.
      electronegativity: (S,) fixed χ (V) used when ``hyper`` has none.
      target: one of :data:`QEQ_TARGETS` (static).  n_species: S (static).
    """

    batches: tuple
    references: tuple
    electronegativity: jax.Array
    target: str = dataclasses.field(metadata=dict(static=True))
    n_species: int = dataclasses.field(metadata=dict(static=True))


def qeq_data(dataset, *, target: str = "charges", electronegativity=None, species=None, batch_size: int = 32,
             dtype=None) -> QeqData:
    """Pad structures with reference ``charges`` or ``dipole`` targets for :func:`qeq_loss` (host).

    Args:
      dataset: open-boundary structures whose ``targets`` hold ``target``.
      target: "charges" ((n,) e per structure), "dipole" ((3,) e·Å) or
        "fragment_charges": each fragment's formal charge (e.g. +1 / −1 for the monomers
        of an ion pair) against the sum of its Qeq charges when the solve constrains only
        the total charge — does Qeq move the right charge between molecules?
        For "charges" and "dipole" the structures' fragments are the constraints of the
        solve: without fragments only the total charge is fixed (charge may flow between
        molecules); with ``fragments`` / ``fragment_charges`` set (e.g. every molecule
        of a cluster neutral) each fragment keeps its charge and only polarises — a
        fluctuating-charge model.  Dipoles are Σ q_i R_i about the origin, so for
        charged structures the reference must use the same origin.
      electronegativity: (S,) χ per species in V, fixed unless passed in ``hyper``
        (default 0).
      species: atomic numbers of the channels (default the data set's).

    Returns:
      :class:`QeqData`.

    Raises:
      ValueError: an unknown target, structures without it, periodic structures.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import Structure
      >>> R = np.array([[0.0, 0, 0], [0.0, 0, 1.0], [3.0, 0, 0], [3.0, 0, 1.0]])
      >>> pair = Structure(positions=R, numbers=[1, 9, 1, 9], fragments=[0, 0, 1, 1],
      ...                  fragment_charges=[0.0, 0.0], targets={"dipole": np.array([0.0, 0.0, -0.8])})
      >>> d = qeq_data([pair], target="dipole", electronegativity=[0.0, 4.0], batch_size=4)
      >>> d.n_species, d.references[0].shape, d.batches[0].fragment_charges.shape   # padded to 4 structures
      (2, (4, 3), (4, 2))
    """
    from ..data._dataset import Dataset

    if target not in QEQ_TARGETS:
        raise ValueError(f"target must be one of {QEQ_TARGETS}, got {target!r}.")
    structures = list(dataset)
    if target == "fragment_charges" and any(s.fragments is None for s in structures):
        raise ValueError("target='fragment_charges' needs structures with fragments and fragment charges.")
    if any(s.periodic for s in structures):
        raise ValueError("qeq_data supports open-boundary structures only.")
    ds = Dataset(structures)
    species = tuple(ds.species) if species is None else tuple(species)
    targets = () if target == "fragment_charges" else (target,)
    loader = BatchLoader(ds, species, cutoff=1.0, batch_size=batch_size, targets=targets, dtype=dtype,
                         n_fragments=None, max_shapes=2)
    batches, refs = [], []
    for atoms, tg in loader.epoch(None):
        batches.append(atoms)
        refs.append(atoms.fragment_charges if target == "fragment_charges" else getattr(tg, target))
    chi = np.zeros(len(species)) if electronegativity is None else np.asarray(electronegativity, np.float64)
    if chi.shape != (len(species),):
        raise ValueError(f"electronegativity needs one value per species {species}, got shape {chi.shape}.")
    dt = batches[0].positions.dtype
    return QeqData(batches=tuple(batches), references=tuple(refs), electronegativity=jnp.asarray(chi, dt),
                   target=target, n_species=len(species))


def _all_pairs(atom_mask) -> Neighbors:
    n = atom_mask.shape[0]
    idx = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (n, n))
    return Neighbors(idx=idx, mask=atom_mask[:, None] & atom_mask[None, :] & ~jnp.eye(n, dtype=bool))


def qeq_loss(hyper, data: QeqData):
    """RMS error of Qeq charges (e), dipoles (e·Å) or fragment charges (e) against the references (jittable).

    The charges minimise Σ χ q + ½ J q² + E_Coulomb(q; Gaussian widths σ) under the
    constraints of :func:`qeq_data` (total charge, or each fragment's charge), solved
    densely with all pairs (open boundary) and differentiated implicitly.  Only
    differences of χ between species matter when every constraint fixes a sum of charges
    (a common shift of χ is absorbed by the chemical potential), so the gradient along
    a common shift of all χ is zero.

    Args:
      hyper: mapping with (S,) per-species ``hardness`` (V/e, ≥ 0) and ``sigma`` (Å, > 0),
        and optionally ``electronegativity`` (V; else ``data.electronegativity``).
      data: :class:`QeqData`.

    Returns:
      () RMS error over real atoms (charges, e), over structures × 3 Cartesian
      components (dipoles, e·Å) or over fragments (fragment charges, e).

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.data import Dataset, Structure
      >>> R = np.array([[0.0, 0, 0], [0.0, 0, 1.0]])
      >>> ds = Dataset([Structure(positions=R, numbers=[1, 9], targets={"charges": np.array([0.4, -0.4])})])
      >>> d = qeq_data(ds, electronegativity=[0.0, 4.0])
      >>> h = {"hardness": np.array([10.0, 10.0]), "sigma": np.array([0.5, 0.5])}
      >>> float(qeq_loss(h, d)) < 0.4, sorted(jax.grad(qeq_loss)(h, d))
      (True, ['hardness', 'sigma'])
    """
    check_hyper(hyper, keys=("hardness", "sigma"), n_species=data.n_species)
    chi_s = jnp.asarray(hyper.get("electronegativity", data.electronegativity))
    sq, count = 0.0, 0.0
    for batch, ref in zip(data.batches, data.references):
        dtype = batch.positions.dtype
        index = jnp.maximum(batch.species, 0)

        def one(r, z, mask, frag, fq):
            chi = chi_s.astype(dtype)[z]
            hard = jnp.asarray(hyper["hardness"], dtype)[z]
            sig = jnp.where(mask, jnp.asarray(hyper["sigma"], dtype)[z], 1.0)
            if data.target == "fragment_charges":   # only the total charge is constrained
                frag, fq = jnp.zeros_like(frag), jnp.sum(fq, keepdims=True)
            q, _, _ = qeq_solve(r, chi, hard, sig, neighbors=_all_pairs(mask), method="direct",
                                fragments=jnp.maximum(frag, 0), fragment_charges=fq, atom_mask=mask)
            return q

        q = jax.vmap(one)(batch.positions, index, batch.atom_mask, batch.fragments, batch.fragment_charges)
        live = batch.structure_mask
        if data.target == "charges":
            err = jnp.where(batch.atom_mask & live[:, None], q - ref, 0.0)
            count = count + jnp.sum(batch.atom_mask & live[:, None])
        elif data.target == "fragment_charges":
            onehot = (batch.fragments[..., None] == jnp.arange(ref.shape[1])).astype(q.dtype)   # (B, N, F)
            sums = jnp.einsum("bn,bnf->bf", q, onehot)
            present = jnp.any(onehot > 0, axis=1) & live[:, None]
            err = jnp.where(present, sums - ref, 0.0)
            count = count + jnp.sum(present)
        else:
            dip = jnp.einsum("bn,bnx->bx", q, batch.positions)
            err = jnp.where(live[:, None], dip - ref, 0.0)
            count = count + jnp.sum(live) * 3
        sq = sq + jnp.sum(err**2)
    return jnp.sqrt(sq / count)

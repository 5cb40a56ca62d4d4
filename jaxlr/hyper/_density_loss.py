"""The density-model hyperparameter loss: multipolar charge equilibration with per-species parameters only.

:func:`density_loss` is :func:`jaxlr.hyper.qeq_loss` generalised from one Gaussian charge
per atom to the s + p Gaussian basis of :func:`jaxlr.equilibration.density_solve`.  Every
atom of species a carries ``n_s`` s functions and ``n_p`` p (dipole) functions; the
deformation coefficients ``x_i`` (N, n_s + 3 n_p) minimise

    E(x) = Σ_i [ b_aᵀ x_i + ½ x_iᵀ H_a x_i ] + ½ xᵀ C(σ) x

subject to each fragment's charge (e.g. every water molecule neutral: the structures'
``fragments`` / ``fragment_charges``; without them only the total charge).  C is the exact
open-boundary Coulomb matrix of all s and p Gaussians (self-interactions included) and
the per-species terms are the hyperparameters:

=================== ==================== ===================================================
key                 shape                meaning
=================== ==================== ===================================================
``s_widths``        (S, n_s) Å, > 0      widths σ of each species' s functions
``p_widths``        (S, n_p) Å, > 0      widths of each species' p functions
``shell_hardness``  (S, n_s + n_p), > 0  diagonal of H_a per shell: s shells (V/e), then p
                                         shells (V/(e·Å²), the same for x, y, z)
``linear``          (S, n_s) V           b_a on the s functions ("electronegativities")
=================== ==================== ===================================================

H_a is diagonal with a positive entry per shell, so the system is symmetric positive
definite by construction.  The p slots of b are zero: without a network there is no
vector an atom could point a linear p term along that turns with the structure (a fixed
laboratory-frame vector would break rotational invariance), so atomic dipoles come only
from polarisation by the other atoms' field.  Only differences of ``linear`` matter when
every constraint fixes a sum of charges: a common shift of all s linear terms is absorbed
by the fragments' chemical potentials, so the gradient along it is zero.

Everything is differentiable through the implicit (``custom_linear_solve``) solve.
Static, hence not differentiable: the number of s and p functions per species (they fix
the shapes), the species, the constraints, the dense solver and the open boundary.

Targets (:data:`DENSITY_TARGETS`):

* ``"coefficients"`` — the electrostatic energy of the density error, ½ (Δρ|Δρ) per
  structure (:func:`jaxlr.electrostatics.coulomb_metric`, valid across different bases),
  summed over structures and divided by the number of atoms: eV/atom, the
  ``density_coulomb`` measure of :mod:`jaxlr.train` (already a squared norm, so it is not
  square-rooted).  The model density is a fixed neutral spherical promolecule in the
  reference's own basis (each element's mean reference density,
  :func:`jaxlr.data.mean_coefficients`, as the density model uses) plus x in the model's
  basis, so Δρ = ρ_x − (ρ_ref − ρ_promolecule) and moving the model's widths moves only
  the functions of the deformation x.
* ``"dipole"`` — RMS error of the total dipole Σ_i q_i R_i + μ_i (e·Å) over structures × 3.
* ``"charges"`` — RMS error of the atomic charges q_i = Σ_n x_{i,s,n} (e) over atoms.

The neutral spherical promolecule has no charge and no dipole, so charges and dipoles are
those of x.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data._batching import BatchLoader
from ..data._padding import far_padding
from ..electrostatics import coulomb_metric
from ..equilibration._density import GaussianBasis, density_solve
from ._loss import check_hyper

__all__ = ["DENSITY_HYPER", "DENSITY_TARGETS", "DensityData", "density_data", "density_errors", "density_loss",
           "density_predictions"]

#: what :func:`density_loss` can fit
DENSITY_TARGETS = ("coefficients", "dipole", "charges")
#: the hyperparameters of :func:`density_loss` (``shell_hardness`` is required, the others
#: default to :meth:`DensityData.default_hyper`)
DENSITY_HYPER = ("s_widths", "p_widths", "shell_hardness", "linear")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DensityData:
    """Open-boundary structures with reference densities, dipoles or charges, for :func:`density_loss` (a pytree).

    Build with :func:`density_data`.  Every reference the structures hold is kept, so
    :func:`density_errors` reports all of them whatever ``target`` the loss fits.

    Attributes:
      batches: padded :class:`jaxlr.data.AtomsBatch` es (species channels, fragments).
      coefficients: per batch (B, N, K_ref) reference minus promolecule coefficients in the
        reference basis (e, e·Å; zeros on padding), or None.
      coefficient_widths: per batch (B, N, n_s_ref + n_p_ref) widths of the reference basis
        (Å), or None.
      dipoles: per batch (B, 3) reference dipoles (e·Å), or None.
      charges: per batch (B, N) reference charges (e), or None.
      promolecule: (S, K_ref) the fixed per-species coefficients taken off the reference
        (zeros without a promolecule; None without coefficients).
      basis: the model's :class:`jaxlr.equilibration.GaussianBasis` (static): species,
        shell counts and default widths.
      target: one of :data:`DENSITY_TARGETS` (static).
      reference_s: s functions per atom of the reference layout (static; 0 without
        coefficients).
    """

    batches: tuple
    coefficients: tuple | None
    coefficient_widths: tuple | None
    dipoles: tuple | None
    charges: tuple | None
    promolecule: jax.Array | None
    basis: GaussianBasis = dataclasses.field(metadata=dict(static=True))
    target: str = dataclasses.field(metadata=dict(static=True))
    reference_s: int = dataclasses.field(default=0, metadata=dict(static=True))

    @property
    def n_species(self) -> int:
        """S, the number of species channels."""
        return self.basis.n_species

    @property
    def hyper_shapes(self) -> dict:
        """The shape of each hyperparameter of :data:`DENSITY_HYPER` (read by :func:`check_hyper`)."""
        s, n_s, n_p = self.basis.n_species, self.basis.n_s, self.basis.n_p
        return {"s_widths": (s, n_s), "p_widths": (s, n_p), "shell_hardness": (s, n_s + n_p), "linear": (s, n_s)}

    def available(self) -> tuple:
        """The targets whose references every structure holds."""
        return tuple(t for t, v in zip(DENSITY_TARGETS, (self.coefficients, self.dipoles, self.charges))
                     if v is not None)

    def default_hyper(self, hardness: float = 10.0) -> dict:
        """Start values (numpy): the basis widths, ``hardness`` on every shell, zero linear terms.

        ``hardness`` = 10 V/e is where :class:`jaxlr.models.DensityModel` starts its local
        matrices (the diagonal of A_Z A_Zᵀ).  Padding shells (a species with fewer
        functions) get width 1 Å; their values do not matter.

        Example:
          >>> b = GaussianBasis(species=(1, 8), s_widths=((0.4,), (0.3, 0.7)), p_widths=((0.4,), (0.5,)))
          >>> d = DensityData(batches=(), coefficients=None, coefficient_widths=None, dipoles=None, charges=None,
          ...                 promolecule=None, basis=b, target="dipole")
          >>> {k: v.shape for k, v in d.default_hyper().items()}
          {'s_widths': (2, 2), 'p_widths': (2, 1), 'shell_hardness': (2, 3), 'linear': (2, 2)}
        """
        s, p = self.basis.width_arrays()
        shapes = self.hyper_shapes
        return {"s_widths": s, "p_widths": p, "shell_hardness": np.full(shapes["shell_hardness"], float(hardness)),
                "linear": np.zeros(shapes["linear"])}


def _basis_for(structures, species, basis) -> GaussianBasis:
    if basis is not None:
        if not isinstance(basis, GaussianBasis):
            raise ValueError(f"basis must be a jaxlr.equilibration.GaussianBasis, got {type(basis).__name__}.")
        if tuple(basis.species) != tuple(species):
            raise ValueError(f"the basis covers species {tuple(basis.species)}, but the data's species channels are "
                             f"{tuple(species)}: build the GaussianBasis with species={tuple(species)} (that order).")
        return basis
    from ..data import reference_basis

    try:
        ref = reference_basis(structures[0])
    except ValueError:
        raise ValueError("the structures carry no density-basis widths (info['widths_<El>_s'/'_p'], as the water "
                         "clusters do): pass basis= (a jaxlr.equilibration.GaussianBasis).") from None
    missing = [z for z in species if z not in ref]
    if missing:
        raise ValueError(f"the first structure's reference basis has no functions for atomic numbers {missing}; "
                         "pass basis= (a jaxlr.equilibration.GaussianBasis).")
    return GaussianBasis(species=tuple(species), s_widths=tuple(ref[z][0] for z in species),
                         p_widths=tuple(ref[z][1] for z in species))


def _promolecule_table(structures, species, promolecule, n_coefficients: int, n_s_ref: int) -> np.ndarray:
    if promolecule is None:
        return np.zeros((len(species), n_coefficients))
    if isinstance(promolecule, str):
        if promolecule != "mean":
            raise ValueError(f"promolecule must be 'mean', None or a sequence of (Z, coefficients), got "
                             f"{promolecule!r}.")
        from ..data import mean_coefficients

        promolecule = mean_coefficients(structures, neutral=True)
    given = {}
    for entry in promolecule:
        if len(entry) != 2 or np.shape(entry[1]) != (n_coefficients,):
            raise ValueError(f"promolecule entries are (Z, {n_coefficients} coefficients in the reference layout), "
                             f"got {entry!r}.")
        given[int(entry[0])] = np.asarray(entry[1], np.float64)
    missing = [z for z in species if z not in given]
    if missing:
        raise ValueError(f"the promolecule has no coefficients for atomic numbers {missing}.")
    table = np.stack([given[z] for z in species])
    if not np.all(np.isfinite(table)):
        raise ValueError("the promolecule coefficients must be finite.")
    if np.any(table[:, n_s_ref:] != 0.0) or np.any(np.abs(table[:, :n_s_ref].sum(axis=1)) > 1e-6):
        raise ValueError("the promolecule must be neutral and spherical per element (s coefficients summing to 0, "
                         "p coefficients 0), e.g. jaxlr.data.mean_coefficients(train, neutral=True).")
    return table


def density_data(dataset, *, target: str = "coefficients", basis: GaussianBasis | None = None, species=None,
                 promolecule="mean", batch_size: int = 32, dtype=None) -> DensityData:
    """Pad structures with reference densities, dipoles or charges for :func:`density_loss` (host).

    Args:
      dataset: open-boundary :class:`jaxlr.data.Structure` s (or a Dataset).  Their
        fragments are the constraints of the solve: set ``fragments`` /
        ``fragment_charges`` (e.g. every molecule neutral) for a fluctuating-charge model;
        without them only the total charge is fixed.
      target: the loss, one of :data:`DENSITY_TARGETS`: ``"coefficients"`` needs a
        ``coefficients`` target (N, K_ref) and ``info["basis_widths"]`` (N, n_s_ref +
        n_p_ref) in every structure (as :func:`jaxlr.data.load_water_clusters` gives),
        ``"dipole"`` a ``dipole`` (3,) e·Å about the origin, ``"charges"`` a ``charges``
        (N,) e target.  Every other of these references that all structures hold is kept
        for :func:`density_errors`.
      basis: the model's :class:`jaxlr.equilibration.GaussianBasis` (species in the order
        of ``species``): the number of s and p functions per species and the default
        widths.  Default: the reference basis of the first structure
        (:func:`jaxlr.data.reference_basis`).
      species: atomic numbers of the channels (default the data set's, sorted).
      promolecule: for the coefficient references: ``"mean"`` (default) — each element's
        mean reference coefficients of ``dataset`` made neutral
        (:func:`jaxlr.data.mean_coefficients`; pass the training set's to score other
        splits), None — no fixed part, or ``((Z, coefficients), ...)`` in the reference
        layout, neutral and spherical.  It is subtracted from the references here.
      batch_size, dtype: padding (at most two padded atom counts).

    Returns:
      :class:`DensityData`.

    Raises:
      ValueError: an unknown target, structures without it, periodic structures, a basis
        that does not match the species, a bad promolecule.

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import load_water_clusters
      >>> d = density_data(list(load_water_clusters(n_waters=1))[:2], batch_size=2)
      >>> d.basis.n_s, d.basis.n_p, d.hyper_shapes["shell_hardness"], d.available()
      (4, 2, (2, 6), ('coefficients', 'dipole'))
      >>> d.coefficients[0].shape, d.reference_s
      ((2, 4, 10), 4)
    """
    from ..data._dataset import Dataset

    if target not in DENSITY_TARGETS:
        raise ValueError(f"target must be one of {DENSITY_TARGETS}, got {target!r}.")
    structures = list(dataset)
    if not structures:
        raise ValueError("the dataset is empty.")
    if any(s.periodic for s in structures):
        raise ValueError("density_data supports open-boundary structures only.")
    ds = Dataset(structures)
    species = tuple(ds.species) if species is None else tuple(int(z) for z in species)
    has = {"coefficients": all("coefficients" in s.targets and s.info.get("basis_widths") is not None
                               for s in structures),
           "dipole": all("dipole" in s.targets for s in structures),
           "charges": all("charges" in s.targets for s in structures)}
    if not has[target]:
        what = "a 'coefficients' target and info['basis_widths']" if target == "coefficients" else f"a {target!r} target"
        lacking = sum(1 for s in structures if not (target in s.targets and (target != "coefficients"
                                                                               or s.info.get("basis_widths") is not None)))
        raise ValueError(f"target={target!r} needs {what} in every structure; {lacking} of {len(structures)} lack it.")
    available = tuple(t for t in DENSITY_TARGETS if has[t])
    basis = _basis_for(structures, species, basis)
    loader = BatchLoader(ds, species, cutoff=1.0, batch_size=batch_size, targets=available, dtype=dtype,
                         max_shapes=2)
    table, n_s_ref = None, 0
    if has["coefficients"]:
        k_ref, shells = loader.n_coefficients, loader.coefficient_shells
        n_s_ref, rest = divmod(3 * shells - k_ref, 2)
        if rest or not 0 < n_s_ref <= shells:
            raise ValueError(f"info['basis_widths'] has {shells} shells per atom, which do not fit {k_ref} "
                             "coefficients (n_s + 3 n_p).")
        table = _promolecule_table(structures, species, promolecule, k_ref, n_s_ref)
    batches, coefs, widths, dipoles, charges = [], [], [], [], []
    for atoms, tg in loader.epoch(None):
        batches.append(atoms)
        if table is not None:
            z = np.asarray(atoms.species)
            fixed = np.where((z >= 0)[..., None], table[np.maximum(z, 0)], 0.0)
            c = np.asarray(tg.coefficients, np.float64) - fixed
            coefs.append(jnp.asarray(c, atoms.positions.dtype))
            widths.append(tg.coefficient_widths)
        dipoles.append(tg.dipole)
        charges.append(tg.charges)
    dt = batches[0].positions.dtype
    keep = (lambda name, parts: tuple(parts) if has[name] else None)
    return DensityData(batches=tuple(batches), coefficients=keep("coefficients", coefs),
                       coefficient_widths=keep("coefficients", widths), dipoles=keep("dipole", dipoles),
                       charges=keep("charges", charges), promolecule=None if table is None else jnp.asarray(table, dt),
                       basis=basis, target=target, reference_s=int(n_s_ref))


def _hyper_arrays(hyper, data: DensityData, dtype) -> dict:
    check_hyper(hyper, keys=("shell_hardness",), data=data)
    default = data.default_hyper()
    return {k: jnp.asarray(hyper.get(k, default[k]), dtype) for k in DENSITY_HYPER}


def _solve_batch(h: dict, basis: GaussianBasis, batch):
    """Deformation coefficients (B, N, nb), per-atom widths (B, N, n_s), (B, N, n_p) and far-padded positions."""
    n_s, n_p = basis.n_s, basis.n_p
    s_mask, p_mask = (jnp.asarray(m) for m in basis.shell_masks())            # (S, n_s), (S, n_p), static

    def one(r, z, mask, frag, fq):
        r = far_padding(r, mask)
        sm = s_mask[z] & mask[:, None]
        pm = p_mask[z] & mask[:, None]
        active = jnp.concatenate([sm, jnp.repeat(pm, 3, axis=1)], axis=1)
        sigma_s = jnp.where(sm, h["s_widths"][z], 1.0)
        sigma_p = jnp.where(pm, h["p_widths"][z], 1.0)
        hard = h["shell_hardness"][z]
        diag = jnp.concatenate([hard[:, :n_s], jnp.repeat(hard[:, n_s:], 3, axis=1)], axis=1)
        diag = jnp.where(active, diag, 1.0)
        local = diag[:, :, None] * jnp.eye(n_s + 3 * n_p, dtype=r.dtype)
        linear = jnp.concatenate([jnp.where(sm, h["linear"][z], 0.0), jnp.zeros((r.shape[0], 3 * n_p), r.dtype)],
                                 axis=1)
        res = density_solve(r, sigma_s, sigma_p, linear, local, fragments=jnp.maximum(frag, 0),
                            fragment_charges=fq, active=active, method="direct", solver="dense")
        return jnp.where(active, res.coefficients, 0.0), sigma_s, sigma_p, r

    return jax.vmap(one)(batch.positions, jnp.maximum(batch.species, 0), batch.atom_mask, batch.fragments,
                         batch.fragment_charges)


def _moments(x, positions, atom_mask, n_s: int):
    q = jnp.where(atom_mask, jnp.sum(x[..., :n_s], axis=-1), 0.0)                                  # (B, N)
    mu = jnp.sum(x[..., n_s:].reshape(x.shape[:2] + (-1, 3)), axis=2)                             # (B, N, 3)
    return q, mu, jnp.einsum("bn,bnx->bx", q, positions) + jnp.sum(mu, axis=1)


def density_predictions(hyper, data: DensityData) -> tuple:
    """The model's deformation density, charges and dipoles for every batch of ``data`` (jittable).

    Args:
      hyper: as :func:`density_loss`.  data: :class:`DensityData`.

    Returns:
      per batch a dict: ``coefficients`` (B, N, n_s + 3 n_p) x in the model basis (e, e·Å;
      0 on padding and unused slots), ``basis_widths`` (B, N, n_s + n_p) its widths (Å, s
      shells then p shells, as ``ModelOutput.basis_widths``), ``charges`` (B, N) e,
      ``dipoles`` (B, N, 3) atomic dipoles e·Å, ``total_dipole`` (B, 3) e·Å.  The full model
      density adds ``data.promolecule`` in the reference basis (no charge, no dipole).

    Example:
      >>> import numpy as np
      >>> from jaxlr.data import load_water_clusters
      >>> d = density_data(list(load_water_clusters(n_waters=2))[:1], batch_size=1)
      >>> out = density_predictions(d.default_hyper(), d)[0]
      >>> out["coefficients"].shape, round(abs(float(out["charges"].sum())), 9)
      ((1, 8, 10), 0.0)
    """
    h = _hyper_arrays(hyper, data, data.batches[0].positions.dtype)
    n_s = data.basis.n_s
    out = []
    for batch in data.batches:
        x, sigma_s, sigma_p, _ = _solve_batch(h, data.basis, batch)
        q, mu, total = _moments(x, batch.positions, batch.atom_mask, n_s)
        out.append({"coefficients": x, "basis_widths": jnp.concatenate([sigma_s, sigma_p], axis=-1), "charges": q,
                    "dipoles": mu, "total_dipole": total})
    return tuple(out)


def _errors(hyper, data: DensityData, which) -> dict:
    h = _hyper_arrays(hyper, data, data.batches[0].positions.dtype)
    n_s, n_s_ref = data.basis.n_s, data.reference_s
    sums = {k: 0.0 for k in which}
    counts = {k: 0.0 for k in which}
    for b, batch in enumerate(data.batches):
        x, sigma_s, sigma_p, r = _solve_batch(h, data.basis, batch)
        live = batch.structure_mask
        atoms = batch.atom_mask & live[:, None]
        q, _, total = _moments(x, batch.positions, batch.atom_mask, n_s)
        if "coefficients" in which:
            ref, w = data.coefficients[b], data.coefficient_widths[b]
            metric = jax.vmap(lambda *a: coulomb_metric(*a[:-1], active=a[-1]))(
                r, x, sigma_s, sigma_p, ref, w[..., :n_s_ref], w[..., n_s_ref:], batch.atom_mask)     # (B,) eV
            sums["coefficients"] = sums["coefficients"] + jnp.sum(jnp.where(live, metric, 0.0))
            counts["coefficients"] = counts["coefficients"] + jnp.sum(atoms)
        if "dipole" in which:
            err = jnp.where(live[:, None], total - data.dipoles[b], 0.0)
            sums["dipole"] = sums["dipole"] + jnp.sum(err**2)
            counts["dipole"] = counts["dipole"] + 3 * jnp.sum(live)
        if "charges" in which:
            err = jnp.where(atoms, q - data.charges[b], 0.0)
            sums["charges"] = sums["charges"] + jnp.sum(err**2)
            counts["charges"] = counts["charges"] + jnp.sum(atoms)
    return {k: (sums[k] / counts[k] if k == "coefficients" else jnp.sqrt(sums[k] / counts[k])) for k in which}


def density_loss(hyper, data: DensityData):
    """The error of the per-species density model on ``data.target`` (jittable, differentiable in ``hyper``).

    The model and the targets are those of :mod:`jaxlr.hyper._density_loss` (module
    docstring): per-species s and p widths, a positive diagonal hardness per shell and an
    s linear term, solved exactly (dense, open boundary, all pairs) under the structures'
    fragment constraints and differentiated implicitly.

    Args:
      hyper: mapping with ``shell_hardness`` (S, n_s + n_p) (> 0; V/e for s shells,
        V/(e·Å²) for p shells) and optionally ``s_widths`` (S, n_s) Å, ``p_widths`` (S, n_p)
        Å (> 0; default the basis widths) and ``linear`` (S, n_s) V (default 0);
        :attr:`DensityData.hyper_shapes` lists the shapes.  Padding shells of species with
        fewer functions take any positive value and get zero gradient.
      data: :class:`DensityData` from :func:`density_data`.

    Returns:
      () ``"coefficients"``: Σ ½ (Δρ|Δρ) / Σ atoms (eV/atom); ``"dipole"``: RMS error over
      structures × 3 components (e·Å); ``"charges"``: RMS error over atoms (e).

    Raises:
      ValueError: before anything is compiled, for an unknown key, a missing
        ``shell_hardness``, a wrong shape (naming the key and the expected shape) or a
        non-positive width or hardness (concrete values).

    Example:
      >>> import jax
      >>> from jaxlr.data import load_water_clusters
      >>> d = density_data(list(load_water_clusters(n_waters=1))[:2], batch_size=2)
      >>> h = d.default_hyper()
      >>> loss, grad = jax.value_and_grad(density_loss)(h, d)
      >>> bool(loss > 0), sorted(grad), grad["shell_hardness"].shape
      (True, ['linear', 'p_widths', 's_widths', 'shell_hardness'], (2, 6))
    """
    return _errors(hyper, data, (data.target,))[data.target]


def density_errors(hyper, data: DensityData) -> dict:
    """Every error :func:`density_loss` can report for ``data``, from one solve per structure (jittable).

    Returns:
      ``{target: error}`` for each of :meth:`DensityData.available`: ``coefficients``
      (eV/atom), ``dipole`` (e·Å), ``charges`` (e); and ``"loss"``, the one of
      ``data.target``.

    Example:
      >>> from jaxlr.data import load_water_clusters
      >>> d = density_data(list(load_water_clusters(n_waters=1))[:2], target="dipole", batch_size=2)
      >>> e = density_errors(d.default_hyper(), d)
      >>> sorted(e), bool(e["loss"] == e["dipole"])
      (['coefficients', 'dipole', 'loss'], True)
    """
    out = _errors(hyper, data, data.available())
    out["loss"] = out[data.target]
    return out

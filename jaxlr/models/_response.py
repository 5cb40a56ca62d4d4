"""Static polarisabilities of trained charge-bearing models: α = ∂μ/∂F by forward-mode AD.

The charges of the Qeq and density models are solved self-consistently, so they respond to
a uniform external field F (V/Å): the field adds −F·(Σ_i q_i R_i + Σ_i μ_i) to the
equilibration energy (the density model: ``jaxlr.equilibration.density_solve``; the Qeq
model: χ_i → χ_i − F·R_i).  The learned inputs — electronegativities χ_i, local matrices
H_i and linear terms b_i, Gaussian widths — are functions of the geometry alone and are
held where the geometry puts them; only the solve responds.  The polarisability of the
model is then

    α_ab = ∂μ_a/∂F_b   (e·Å²/V),   μ = Σ_i q_i R_i (+ Σ_i μ_i)   the model's total dipole,

computed by ``jax.jacfwd`` through the implicit solve: three tangent solves, exact up to
the solver accuracy, symmetric (α = −∂²E*/∂F∂F), and positive definite for a molecule
whose equilibration matrix is positive definite.  It is the model-level counterpart of the
solver-level :func:`jaxlr.polarizability`, with the same units.  Both responses are linear
in F, so α does not depend on the field at which it is taken.

The latent-charge model has charges that are a function of the geometry only: they do not
respond to a field, its α is zero by construction, and it is refused (as are the local and
LODE models, which predict no charges).  A uniform field in a periodic cell is not defined
here (the dipole depends on the choice of cell): open boundaries only.

Units: α in e·Å²/V, as :func:`jaxlr.polarizability`.  :func:`polarizability_volume`
converts to the polarisability volume α/(4πε₀) in Å³ (× k_e = 14.39965 eV·Å/e²) or bohr³
(atomic units, the unit quantum chemistry quotes: water ≈ 9.8 bohr³ = 1.45 Å³).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..data._batch import AtomsBatch
from ..data._batching import BatchLoader
from ..data._dataset import Dataset
from ..data._structures import Structure, structure_from_atoms
from ..units import KE

__all__ = ["BOHR", "HARTREE_EV", "polarizability", "polarizability_volume"]

#: Bohr radius in Å and Hartree energy in eV (CODATA 2018, as the water data sets)
BOHR = 0.529177210903
HARTREE_EV = 27.211386245988

#: models whose charges respond to a field
RESPONSIVE = ("qeq", "density")

_REFUSALS = {
    "latent": "the latent-charge model's charges are a function of the geometry only (a network output "
              "shifted to the total charge): they do not respond to a field, so its polarisability is zero "
              "by construction. Use a Qeq or density model, whose charges are solved self-consistently.",
    "local": "the local model predicts no charges and so has no dipole to respond to a field. Use a Qeq or "
             "density model.",
    "lode": "the LODE model predicts no charges and so has no dipole to respond to a field. Use a Qeq or "
            "density model.",
}


def polarizability_volume(alpha, unit: str = "angstrom3"):
    """Polarisability volume α/(4πε₀) of a polarisability α in e·Å²/V.

    ``α [Å³] = k_e · α [e·Å²/V]`` with jaxlr's k_e = 14.399645351950548 eV·Å/e², and
    ``α [bohr³] = α [e·Å²/V] · E_h / a₀²`` (the atomic unit of polarisability, e²a₀²/E_h,
    is one bohr³; E_h = 27.211386245988 eV and a₀ = 0.529177210903 Å, CODATA 2018, as the
    water data sets).  jaxlr's k_e is ASE's Hartree × Bohr from older constants, 8.8e-9
    below the CODATA 2018 product, so the two units differ from a₀³ by that much.

    Args:
      alpha: array of any shape (e.g. (3, 3) or (B, 3, 3)) in e·Å²/V.
      unit: ``"angstrom3"`` or ``"bohr3"``.

    Returns:
      the same shape in the unit asked for.

    Raises:
      ValueError: for another unit.

    Example:
      >>> import numpy as np
      >>> alpha = np.eye(3) * 0.1039                     # a water molecule at PBE/def2-SVPD
      >>> round(float(polarizability_volume(alpha, "bohr3")[0, 0]), 2)
      10.1
      >>> round(float(polarizability_volume(alpha)[0, 0]), 3)
      1.496
    """
    if unit == "angstrom3":
        factor = KE
    elif unit == "bohr3":
        factor = HARTREE_EV / BOHR ** 2
    else:
        raise ValueError(f"unit must be 'angstrom3' or 'bohr3', got {unit!r}.")
    return alpha * factor


@functools.lru_cache(maxsize=32)
def _jitted_alpha(potential):
    """α (B, 3, 3) of every structure of a batch at fields (B, 3), jitted once per potential."""

    def alpha(variables, batch: AtomsBatch, field):
        def dipole(delta):
            shifted = dataclasses.replace(batch, field=field + delta[None, :])
            return potential.apply(variables, shifted, forces=False).dipole          # (B, 3)

        # structures are independent: one common field increment gives each its own ∂μ_b/∂F_b
        jac = jax.jacfwd(dipole)(jnp.zeros(3, field.dtype))                           # (B, 3, 3)
        return jnp.where(batch.structure_mask[:, None, None], jac, 0.0)

    return jax.jit(alpha)


def _check_model(potential):
    name = getattr(potential, "name", None)
    if name in RESPONSIVE:
        return
    if name in _REFUSALS:
        raise ValueError(f"no polarisability for a {name!r} model: {_REFUSALS[name]}")
    raise ValueError(f"expected a jaxlr.models.Potential of a Qeq or density model, got {potential!r}.")


def _as_structures(value):
    """(list of Structures, single?) from a Structure, ase.Atoms, Dataset or sequence of them."""
    if isinstance(value, Structure):
        return [value], True
    if hasattr(value, "get_positions") and hasattr(value, "numbers"):       # ase.Atoms
        return [structure_from_atoms(value)], True
    if isinstance(value, (Dataset, list, tuple)):
        out = []
        for k, s in enumerate(value):
            if hasattr(s, "get_positions") and not isinstance(s, Structure):
                s = structure_from_atoms(s)
            if not isinstance(s, Structure):
                raise ValueError(f"item {k} is a {type(s).__name__}, not a jaxlr.data.Structure or ase.Atoms.")
            out.append(s)
        if not out:
            raise ValueError("no structures given.")
        return out, False
    raise ValueError(f"expected a Structure, ase.Atoms, Dataset, a list of them or an AtomsBatch, got "
                     f"{type(value).__name__}.")


def _field_array(field, n: int, dtype, per_structure_ok: bool):
    if field is None:
        return jnp.zeros((n, 3), dtype)
    f = np.asarray(field, dtype=np.float64)
    if f.shape == (3,):
        f = np.broadcast_to(f, (n, 3))
    elif not (per_structure_ok and f.shape == (n, 3)):
        shapes = f"(3,) or ({n}, 3)" if per_structure_ok else "(3,)"
        raise ValueError(f"field must have shape {shapes} (V/Å), got {np.shape(field)}.")
    if not np.all(np.isfinite(f)):
        raise ValueError("field contains NaN or inf values.")
    return jnp.asarray(f, dtype)


def polarizability(potential, variables, structures, field=None, *, batch_size: int = 16):
    """Static polarisability α_ab = ∂μ_a/∂F_b (e·Å²/V) of a trained Qeq or density model.

    The derivative of the model's total dipole with respect to a uniform external field,
    with everything the networks predict (χ, local matrices, linear terms) held at the
    geometry and the charge / density solve responding (module docstring): forward-mode AD
    through the implicit solve, open boundary only.

    Args:
      potential: a :class:`jaxlr.models.Potential` of a ``"qeq"`` or ``"density"`` model.
      variables: its variables (from :meth:`~jaxlr.models.Potential.init`, training or a
        checkpoint).
      structures: one :class:`jaxlr.data.Structure` or ``ase.Atoms`` (→ α (3, 3)); a
        :class:`jaxlr.data.Dataset` or list of them (→ (S, 3, 3), padded into batches of
        ``batch_size`` built with ``potential.cutoff``); or a padded
        :class:`jaxlr.data.AtomsBatch` (→ (B, 3, 3), zero for padding structures; jittable
        in ``variables`` and the batch's arrays).
      field: the field (V/Å) at which α is taken: None (zero), (3,), or (B, 3) for a batch.
        α of both models is independent of it (their response is linear).
      batch_size: structures per batch for a list or dataset.

    Returns:
      α in e·Å²/V (a jax array; :func:`polarizability_volume` converts to Å³ or bohr³).

    Raises:
      ValueError: for a latent-charge, local or LODE model (no field response, see the
        module docstring), a periodic structure or batch, or a field of the wrong shape.

    Example:
      >>> import jax, numpy as np
      >>> from jaxlr.data import Structure
      >>> from jaxlr.models import build_potential
      >>> pot = build_potential("qeq", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=(4,), chi_hidden=(4,))
      >>> water = Structure(positions=np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]]),
      ...                   numbers=[8, 1, 1])
      >>> from jaxlr.data import make_batches
      >>> [(batch, _)] = make_batches([water], pot.species, cutoff=pot.cutoff, batch_size=1)
      >>> variables = pot.init(jax.random.PRNGKey(0), batch)
      >>> alpha = polarizability(pot, variables, water)
      >>> alpha.shape, bool(alpha[0, 0] == 0.0), bool(alpha[1, 1] > alpha[2, 2] > 0)  # in-plane charge flow only
      ((3, 3), True, True)
    """
    _check_model(potential)
    if isinstance(structures, AtomsBatch):
        if structures.cell is not None:
            raise ValueError("a uniform field is defined for open boundaries only; the batch is periodic.")
        n = structures.positions.shape[0]
        field = _field_array(field, n, structures.positions.dtype, per_structure_ok=True)
        return _jitted_alpha(potential)(variables, structures, field)
    items, single = _as_structures(structures)
    periodic = [k for k, s in enumerate(items) if s.periodic]
    if periodic:
        raise ValueError(f"a uniform field is defined for open boundaries only; structure(s) {periodic[:5]} "
                         "have a cell.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
    size = 1 if single else min(int(batch_size), len(items))
    _field_array(field, 1, jnp.float32, per_structure_ok=False)         # validate before any compilation
    alpha_fn = _jitted_alpha(potential)
    loader = BatchLoader(Dataset(items), potential.species, cutoff=potential.cutoff, batch_size=size)
    out = np.zeros((len(items), 3, 3))
    for batch, _, indices in loader.epoch(None, with_indices=True):
        f = _field_array(field, batch.positions.shape[0], batch.positions.dtype, per_structure_ok=False)
        a = np.asarray(alpha_fn(variables, batch, f))
        for b, i in enumerate(np.asarray(indices)):
            if i >= 0:
                out[int(i)] = a[b]
    result = jnp.asarray(out, jnp.result_type(float))
    return result[0] if single else result

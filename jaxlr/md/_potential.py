"""A trained jaxlr model as a jax-md energy function: :func:`potential_neighbor_list`.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
import numpy as np

from ..data import AtomsBatch
from ._space import Geometry, make_geometry, validate_setup

__all__ = ["PotentialEnergy", "potential_neighbor_list"]


class PotentialEnergy:
    """The jittable energy function of :func:`potential_neighbor_list` (a callable object).

    ``energy_fn(R, neighbor, *, box=None, perturbation=None)`` → the model's energy (eV);
    :meth:`outputs` returns every output of the model (charges, dipole, … as the model
    predicts them).

    Attributes:
      potential: the :class:`jaxlr.models.Potential` (its periodic meshes fixed for the box).
      species: (N,) atomic numbers.  total_charge: e.
    """

    def __init__(self, geometry: Geometry, potential, variables, species, channels, total_charge):
        self._geometry = geometry
        self.potential = potential
        self.variables = variables
        self.species = species
        self._channels = channels
        self.total_charge = float(total_charge)

    @property
    def fractional_coordinates(self) -> bool:
        return self._geometry.fractional

    def _structure(self, R, neighbor, box, perturbation) -> AtomsBatch:
        geo = self._geometry
        R_real, cell = geo.real(R, box, perturbation)
        n = R_real.shape[0]
        nbrs = geo.neighbors(neighbor, R_real, cell)
        dtype = R_real.dtype
        return AtomsBatch(positions=R_real, species=self._channels, atom_mask=jnp.ones((n,), bool),
                          structure_mask=jnp.asarray(True), total_charge=jnp.asarray(self.total_charge, dtype),
                          fragments=jnp.zeros((n,), jnp.int32),
                          fragment_charges=jnp.full((1,), self.total_charge, dtype), neighbors=nbrs, cell=cell)

    def outputs(self, R, neighbor=None, *, box=None, perturbation=None) -> dict:
        """Every output of the model's module for one structure: ``{"energy": (), …}``
        (e.g. ``"charges"`` (N,), ``"dipole"`` (3,), ``"atom_energies"`` (N,)); jittable."""
        return self.potential.module.apply(self.variables, self._structure(R, neighbor, box, perturbation))

    def __call__(self, R, neighbor=None, *, box=None, perturbation=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown keyword argument(s) {sorted(kwargs)}; the model energy takes neighbor=, "
                             "box= and perturbation=.")
        return self.outputs(R, neighbor, box=box, perturbation=perturbation)["energy"]


def potential_neighbor_list(potential, variables, displacement_fn, box, species, *, total_charge: float = 0.0,
                            fractional_coordinates: bool = True, dr_threshold: float = 0.5,
                            capacity_multiplier: float = 1.25, format=None, lode_accuracy: float = 1e-4):
    """Any trained :class:`jaxlr.models.Potential` as a jax-md energy: ``neighbor_fn, energy_fn``.

    All five model kinds ("local", "lode", "latent", "qeq", "density") work, periodic
    (``box`` given) or open (``box=None`` with ``jax_md.space.free()``).  The model sees one
    structure exactly as in training (:meth:`Potential.apply`), with its neighbour list from
    jax-md (``Dense``, cutoff ``potential.cutoff``, pairs beyond it masked).  For a periodic
    box the model's PME meshes (LODE, Coulomb) and, for charge models, the real-space
    cutoff of their Gaussian charges are planned for this box on the host
    (:meth:`Potential.adapted_to`, with the learned widths), so ``energy_fn.potential.cutoff``
    may exceed the descriptor cutoff and the box must be at least twice as wide.  Box, coordinate and overflow conventions are those of
    :func:`coulomb_neighbor_list`.

    Args:
      potential: a :class:`jaxlr.models.Potential` (e.g. from ``jaxlr.train.load``).
      variables: its variables (``{"params": …, "stats": …}``).
      displacement_fn: ``jax_md.space.periodic_general(box, …)`` or ``space.free()``.
      box: jax-md box (columns are lattice vectors) or None (open boundary).
      species: (N,) atomic numbers; each must be one of ``potential.species``.
      total_charge: the structure's total charge (e), for models with charges.
      fractional_coordinates: positions are fractional (periodic only; must be False for
        an open boundary).  dr_threshold, capacity_multiplier, format: as
        :func:`coulomb_neighbor_list`.
      lode_accuracy: accuracy of the LODE mesh of "lode" models (as ``adapted_to``).

    Returns:
      ``(neighbor_fn, energy_fn)``, ``energy_fn`` a :class:`PotentialEnergy`:
      ``energy_fn(R, neighbor, *, box=None, perturbation=None)`` → energy (eV), jittable;
      ``-grad`` gives forces in eV/Å, ``jax_md.quantity.stress`` the stress (jax-md's sign).

    Raises:
      ValueError: unknown species, the model cutoff plus skin beyond half the box, a
        box/coordinate mismatch, a Sparse format; at call time as
        :func:`coulomb_neighbor_list`.

    Example:
      >>> import numpy as np, jax, jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import potential_neighbor_list
      >>> from jaxlr.models import build_potential
      >>> from jaxlr.testing import toy_batch
      >>> pot = build_potential("local", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=(4,))
      >>> variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
      >>> R = jnp.asarray(np.random.default_rng(0).random((6, 3)) * 4.0)
      >>> displacement, shift = space.free()
      >>> neighbor_fn, energy_fn = potential_neighbor_list(pot, variables, displacement, None, [8, 1, 1, 8, 1, 1],
      ...                                                  fractional_coordinates=False)
      >>> forces = -jax.grad(energy_fn)(R, neighbor_fn.allocate(R))
      >>> forces.shape
      (6, 3)
    """
    from jax_md import partition

    from ..models import Potential

    if format is None:
        format = partition.Dense
    if not isinstance(potential, Potential):
        raise ValueError(f"potential must be a jaxlr.models.Potential, got {type(potential).__name__}.")
    z = np.asarray(species)
    if z.ndim != 1 or z.size == 0 or not np.issubdtype(z.dtype, np.integer):
        raise ValueError(f"species must be (N,) integer atomic numbers, got shape {z.shape} and dtype {z.dtype}.")
    known = tuple(potential.species)
    unknown = sorted(set(int(x) for x in z) - set(known))
    if unknown:
        raise ValueError(f"species {unknown} are unknown to this model, which was trained on {list(known)}.")
    channels = jnp.asarray(np.searchsorted(np.asarray(known), z), jnp.int32)
    total = float(total_charge)
    if not np.isfinite(total):
        raise ValueError(f"total_charge must be finite, got {total_charge!r}.")
    b = validate_setup(displacement_fn, box, fractional_coordinates=fractional_coordinates,
                       dr_threshold=dr_threshold, capacity_multiplier=capacity_multiplier, format=format)
    if b is not None:
        kw = dict(lode_accuracy=lode_accuracy)
        if "variables" in inspect.signature(potential.adapted_to).parameters:
            kw["variables"] = variables  # charge models: plan the Coulomb sum for the learned widths
        potential = potential.adapted_to([b.T], **kw)
    geometry = make_geometry(displacement_fn, box, cutoff=potential.cutoff, n_atoms=int(z.size),
                             fractional_coordinates=fractional_coordinates, dr_threshold=dr_threshold,
                             capacity_multiplier=capacity_multiplier, format=format,
                             what=f"the model cutoff ({potential.name})")
    energy_fn = PotentialEnergy(geometry, potential, variables, tuple(int(x) for x in z), channels, total)
    return geometry.neighbor_fn, energy_fn

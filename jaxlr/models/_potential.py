"""``Potential``: a model as one differentiable program over padded batches.

``potential.apply(variables, batch)`` → :class:`jaxlr.models.ModelOutput` with energies,
forces = −∂E/∂R and stress = (1/V) ∂E/∂ε (periodic) from differentiating the energy (never
a separate head), plus charges, dipoles and density coefficients when the model has them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..data._batch import AtomsBatch
from ._descriptors import LocalSpec, LodeSpec, plan_lode
from ._electrostatics import WIDTH_MARGIN, CoulombSpec, plan_coulomb, widths_within_plan
from ._energy_models import MODELS
from ._output import ModelOutput
from ._repulsion import repulsion_radii

__all__ = ["Potential", "build_potential"]

_SPECS = {"local": LocalSpec, "lode": LodeSpec, "coulomb": CoulombSpec}


def _unbatched(batch: AtomsBatch, k: int):
    return jax.tree_util.tree_map(lambda x: x[k], batch)


@dataclasses.dataclass(frozen=True, eq=False)
class Potential:
    """A jaxlr model: a single-structure flax module lifted to padded batches.

    Attributes:
      name: model kind, a key of :data:`jaxlr.models.MODELS`
        ("local", "lode", "latent", "qeq", "density").
      module: the flax.linen module of one structure.

    Use :func:`build_potential` to make one, :meth:`adapted_to` to fix periodic meshes for
    the cells of a data set, :meth:`init` for variables, :meth:`apply` to predict.

    Example:
      >>> import jax, numpy as np, jaxlr
      >>> from jaxlr.models import build_potential
      >>> from jaxlr.testing import toy_batch
      >>> pot = build_potential("local", species=(1, 8), local=dict(cutoff=3.0, max_radial=3, max_angular=2),
      ...                       hidden=(8,))
      >>> batch = toy_batch(pot.species, cutoff=pot.cutoff)
      >>> variables = pot.init(jax.random.PRNGKey(0), batch)
      >>> out = pot.apply(variables, batch)
      >>> out.forces.shape == batch.positions.shape
      True
    """

    name: str
    module: object

    # ---- static description -------------------------------------------------------------
    @property
    def species(self) -> tuple:
        """Atomic numbers of the species channels (sorted)."""
        return tuple(self.module.species)

    @property
    def cutoff(self) -> float:
        """Neighbour-list cutoff (Å) that batches for this model must be built with.

        The largest descriptor cutoff and, for a charge model planned for periodic cells
        (:meth:`adapted_to`), the real-space cutoff of its Gaussian-charge Ewald sum
        (descriptors ignore the neighbours beyond their own cutoff).  Lists built with a
        larger cutoff (a skin) give the same energy.
        """
        cut = self.module.local.cutoff
        if hasattr(self.module, "lode"):
            cut = max(cut, self.module.lode.cutoff)
        coulomb = getattr(self.module, "coulomb", None)
        if coulomb is not None and coulomb.cutoff is not None:
            cut = max(cut, coulomb.cutoff)
        return float(cut)

    @property
    def predicts(self) -> tuple:
        """Targets this model predicts (names of :data:`jaxlr.data.TARGETS`)."""
        base = ("energy", "forces", "stress")
        extra = {"latent": ("charges", "dipole"), "qeq": ("charges", "dipole"),
                 "density": ("charges", "dipole", "coefficients")}
        return base + extra.get(self.name, ())

    def config(self) -> dict:
        """A JSON-serialisable description; :meth:`from_config` rebuilds the same potential."""
        out = {"model": self.name}
        for f in dataclasses.fields(self.module):
            if f.name in ("parent", "name"):
                continue
            v = getattr(self.module, f.name)
            if dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return json_ready(out)

    @classmethod
    def from_config(cls, config: dict) -> "Potential":
        """Inverse of :meth:`config`."""
        config = dict(config)
        name = config.pop("model")
        return build_potential(name, **config)

    def adapted_to(self, cells, *, lode_accuracy: float = 1e-4, variables=None) -> "Potential":
        """Fix the PME meshes (LODE and Coulomb) for a family of periodic cells (host).

        For the charge models the periodic Coulomb sum is planned for Gaussian charges up
        to a width bound σ_max (``coulomb.sigma_max``): with ``variables``, the larger of
        the recorded bound and :data:`~jaxlr.models._electrostatics.WIDTH_MARGIN` × the
        largest learned width (the re-plan after :meth:`width_check` failed); without, the
        recorded or declared bound, else WIDTH_MARGIN × the largest initial width.  The
        plan sets the real-space cutoff, hence :attr:`cutoff`: build batches after it.

        Args:
          cells: iterable of (3, 3) arrays or None (open boundary).  All periodic or all open.
          lode_accuracy: relative accuracy of the LODE features on the mesh.
          variables: optional current variables (their widths set σ_max, see above).

        Returns:
          a new :class:`Potential` whose static specs hold the mesh shapes, so that every
          batch of the data set runs with one compiled program.

        Example:
          >>> import numpy as np
          >>> from jaxlr.models import build_potential
          >>> pot = build_potential("latent", species=(11, 17), local=dict(cutoff=4.0), sigma=1.0)
          >>> planned = pot.adapted_to([np.eye(3) * 12.0])
          >>> planned.module.coulomb.sigma_max, planned.cutoff > pot.cutoff
          (1.2, True)
        """
        cells = list(cells)
        m = self.module
        changes = {}
        if hasattr(m, "lode"):
            changes["lode"] = plan_lode(m.lode, len(m.species), cells, lode_accuracy)
        if hasattr(m, "coulomb"):
            declared = m.coulomb.sigma_max
            if variables is not None:
                bound = WIDTH_MARGIN * float(np.max(np.asarray(self.gaussian_widths(variables))))
                bound = bound if declared is None else max(bound, float(declared))
            elif declared is not None:
                bound = float(declared)
            else:
                bound = WIDTH_MARGIN * max(m.initial_widths())
            changes["coulomb"] = plan_coulomb(m.coulomb, cells, round(bound, 6))
        return Potential(self.name, m.clone(**changes)) if changes else self

    def gaussian_widths(self, variables):
        """All learned Gaussian widths (Å) of the model, one array (K,) (jittable; empty without).

        Example:
          >>> import jax
          >>> from jaxlr.models import build_potential
          >>> from jaxlr.testing import toy_batch
          >>> pot = build_potential("qeq", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
          ...                       hidden=(4,), chi_hidden=(4,), sigma=0.9)
          >>> v = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
          >>> [round(float(w), 6) for w in pot.gaussian_widths(v)]
          [0.9, 0.9]
        """
        names = self.module.width_names() if hasattr(self.module, "width_names") else ()
        if not names:
            return jnp.zeros((0,))
        return jnp.concatenate([jax.nn.softplus(jnp.ravel(variables["params"][k])) for k in names])

    def width_check(self, variables):
        """``(ok, largest width)``: whether every learned width is within the periodic
        Coulomb plan's bound ``coulomb.sigma_max`` (jittable; a flag, never an error).

        ``ok`` is True for open boundaries, unplanned models and models without widths.
        When it is False the periodic energy is still smooth but less accurate than
        ``coulomb.accuracy``: re-plan with ``adapted_to(cells, variables=variables)`` and
        rebuild the batches with the new :attr:`cutoff` (:meth:`predict` raises instead).

        Example:
          >>> import jax, numpy as np
          >>> from jaxlr.models import build_potential
          >>> from jaxlr.testing import toy_batch
          >>> pot = build_potential("latent", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
          ...                       hidden=(4,), charge_hidden=(4,))
          >>> v = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
          >>> ok, widest = pot.adapted_to([np.eye(3) * 10.0]).width_check(v)
          >>> bool(ok), round(float(widest), 6)
          (True, 1.0)
        """
        widths = self.gaussian_widths(variables)
        if widths.size == 0:
            return jnp.ones((), bool), jnp.zeros(())
        coulomb = self.module.coulomb
        return widths_within_plan(widths, coulomb), jnp.max(widths)

    # ---- variables ----------------------------------------------------------------------
    def init(self, rng, batch: AtomsBatch, *, offsets=None, energy_scale=None) -> dict:
        """Initialise variables: ``{"params": ..., "stats": ...}``.

        The feature standardisation statistics (collection ``"stats"``) are set from the
        real atoms of ``batch`` (pass a representative batch), and the per-species energy
        offsets (S,) and energy scale (eV) from the arguments when given.
        """
        s0 = _unbatched(batch, 0)
        variables = dict(jax.jit(self.module.init)(rng, s0))
        feats = jax.jit(jax.vmap(lambda s: self.module.apply(variables, s, method="descriptors")))(batch)
        mask = np.asarray(batch.atom_mask & batch.structure_mask[:, None]).reshape(-1)
        stats = dict(variables["stats"])
        for key, value in feats.items():
            x = np.asarray(value).reshape(-1, value.shape[-1])[mask]
            mean = x.mean(axis=0)
            scale = x.std(axis=0)
            scale = np.where(scale > 1e-8 * (np.abs(mean) + 1e-30), scale, 1.0)
            dtype = stats[key]["mean"].dtype
            stats[key] = {"mean": jnp.asarray(mean, dtype), "scale": jnp.asarray(scale, dtype)}
        dtype = stats["energy_scale"].dtype
        if offsets is not None:
            offsets = np.asarray(offsets, dtype=np.float64)
            if offsets.shape != (len(self.species),):
                raise ValueError(f"offsets must have shape ({len(self.species)},) (one per species), "
                                 f"got {offsets.shape}.")
            stats["energy_offsets"] = jnp.asarray(offsets, dtype)
        if energy_scale is not None:
            stats["energy_scale"] = jnp.asarray(float(energy_scale), dtype)
        return {"params": variables["params"], "stats": stats}

    # ---- prediction ---------------------------------------------------------------------
    def apply(self, variables, batch: AtomsBatch, *, forces: bool = True, stress: bool | None = None) -> ModelOutput:
        """Predict for a padded batch (jittable; ``jax.jit`` it or use :meth:`predict`).

        Args:
          variables: from :meth:`init` (or a checkpoint).
          batch: :class:`jaxlr.models.AtomsBatch`.
          forces: compute −∂E/∂R.  stress: compute the stress (default: when periodic).

        Returns:
          :class:`jaxlr.models.ModelOutput`; forces are zero on padding atoms, stress None
          for open boundaries.
        """
        periodic = batch.cell is not None
        stress = periodic if stress is None else bool(stress) and periodic
        module = self.module

        def one(s):
            def energy(positions, strain):
                deform = jnp.eye(3, dtype=positions.dtype) + strain
                s2 = dataclasses.replace(s, positions=positions @ deform,
                                         cell=None if s.cell is None else s.cell @ deform)
                out = module.apply(variables, s2)
                return out["energy"], out

            strain = jnp.zeros((3, 3), s.positions.dtype)
            if not (forces or stress):
                return energy(s.positions, strain)[1], None, None
            (_, out), (g_pos, g_strain) = jax.value_and_grad(energy, argnums=(0, 1), has_aux=True)(
                s.positions, strain)
            f = jnp.where(s.atom_mask[:, None], -g_pos, 0.0) if forces else None
            st = g_strain / jnp.abs(jnp.linalg.det(s.cell)) if stress else None
            return out, f, st

        out, f, st = jax.vmap(one)(batch)
        return ModelOutput(energy=out["energy"], forces=f, stress=st, charges=out.get("charges"),
                           dipole=out.get("dipole"), coefficients=out.get("coefficients"),
                           atom_energies=out.get("atom_energies"), basis_widths=out.get("basis_widths"))

    def predict(self, variables, batch: AtomsBatch, **kw) -> ModelOutput:
        """:meth:`apply` under ``jax.jit`` (compiled once per batch shape).

        Raises:
          ValueError: for a periodic batch when a learned width exceeds the Coulomb plan's
            bound (:meth:`width_check`).
        """
        if batch.cell is not None and getattr(self.module, "coulomb", None) is not None:
            ok, widest = self.width_check(variables)
            if not bool(ok):
                raise ValueError(f"a learned Gaussian width ({float(widest):.4g} Å) exceeds the bound "
                                 f"sigma_max = {self.module.coulomb.sigma_max:.4g} Å that the periodic Coulomb sum "
                                 f"was planned for: re-plan with potential.adapted_to(cells, variables=variables) "
                                 f"and rebuild the batches with the new potential.cutoff.")
        return _jitted_apply(self, tuple(sorted(kw.items())))(variables, batch)


@functools.lru_cache(maxsize=64)
def _jitted_apply(potential: Potential, kw: tuple):
    return jax.jit(functools.partial(potential.apply, **dict(kw)))


def json_ready(x):
    """Convert tuples/numpy scalars in a nested structure to JSON types."""
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return x


def _as_tuple(v):
    if isinstance(v, list):
        return tuple(_as_tuple(x) for x in v)
    return v


def build_potential(model: str, *, species, **hyper) -> Potential:
    """Build a :class:`Potential` by model name.

    Args:
      model: "local", "lode", "latent", "qeq" or "density".
      species: atomic numbers (any order; sorted here).
      **hyper: fields of the model's module; ``local``, ``lode``, ``coulomb`` may be dicts of
        :class:`LocalSpec`, :class:`LodeSpec`, :class:`CoulombSpec` fields.  Every model
        takes ``repulsion=True`` (default False) for the fixed ZBL core-repulsion prior,
        switched off at the covalent-radius sum of each pair or at ``repulsion_cutoff``
        (Å, ≤ the local cutoff) — see :func:`jaxlr.models.repulsion_energies`.  A
        configuration without these fields (an older checkpoint) builds the model without
        the prior.

    Example:
      >>> from jaxlr.models import build_potential
      >>> build_potential("qeq", species=[8, 1], hidden=(16,)).species
      (1, 8)
      >>> build_potential("qeq", species=[8, 1], repulsion=True).config()["repulsion"]
      True
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose one of {sorted(MODELS)}.")
    cls = MODELS[model]
    fields = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = set(hyper) - fields
    if unknown:
        raise ValueError(f"model {model!r} has no hyperparameter(s) {sorted(unknown)}; known: {sorted(fields)}.")
    species = tuple(sorted(int(z) for z in species))
    if len(set(species)) != len(species) or not species:
        raise ValueError(f"species must be distinct atomic numbers, got {species}.")
    kw = {}
    for key, value in hyper.items():
        if key in _SPECS and isinstance(value, dict):
            value = _SPECS[key](**{k: _as_tuple(v) for k, v in value.items()})
        else:
            value = _as_tuple(value)
        kw[key] = value
    module = cls(species=species, **kw)
    if module.repulsion:          # a bad switch radius or element fails here, not inside jit
        repulsion_radii(species, module.local.cutoff, module.repulsion_cutoff)
    elif module.repulsion_cutoff is not None:
        raise ValueError(f"repulsion_cutoff={module.repulsion_cutoff} is set but repulsion=False; set "
                         "repulsion=True to add the ZBL prior, or leave repulsion_cutoff out.")
    return Potential(model, module)




"""The energy models of :func:`jaxlr.md.run_md`: built-in NaCl force fields and trained checkpoints.

A *force field* here is the sum of one or more jax-md energy functions, each with its own
neighbour function (``neighbor_fn, energy_fn`` pairs from :func:`coulomb_neighbor_list`,
:func:`qeq_neighbor_list`, :func:`tosi_fumi_neighbor_list`, :func:`potential_neighbor_list`),
so the simulation carries a tuple of jax-md neighbour lists, one per term.

* ``"nacl"`` — the Tosi–Fumi rigid-ion model: Born–Mayer–Huggins short range plus ±1 point
  charges summed with PME;
* ``"nacl-qeq"`` — the same short range plus Gaussian charges equilibrated at every step
  (:data:`jaxlr.md.NACL_QEQ`; a toy, not a fitted model);
* a checkpoint folder (``jaxlr.train.load``), or a ``(potential, variables)`` pair.

Everything here runs on the host before anything is compiled and raises ``ValueError`` with
a message that says what to change.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..system import perpendicular_widths
from ._coulomb import coulomb_neighbor_list
from ._potential import potential_neighbor_list
from ._qeq import qeq_neighbor_list
from ._space import make_geometry
from ._tosi_fumi import NACL_QEQ, TOSI_FUMI_NACL, neighbor_distances, tosi_fumi_pair

__all__ = ["BUILTIN_MODELS", "ForceField", "ShiftedForceTosiFumi", "build_forcefield", "params_from_json",
           "params_to_json", "shifted_force_tosi_fumi"]

#: names of the built-in energy models of :func:`jaxlr.md.run_md`
BUILTIN_MODELS = ("nacl", "nacl-qeq")
#: longest Tosi–Fumi truncation (Å) the built-ins use; shorter when the box is small
_TF_CUTOFF = 9.0
#: shortest Tosi–Fumi truncation (Å) accepted for the built-ins (the Na–Cl well sits at 2.8 Å)
_TF_MIN_CUTOFF = 4.5


def params_to_json(params) -> dict | None:
    """A :class:`jaxlr.CoulombParams` as a JSON-able dict (None stays None); see :func:`params_from_json`.

    Example:
      >>> from jaxlr.electrostatics import CoulombParams, MeshSpec
      >>> p = CoulombParams("pme", smearing=1.2, cutoff=6.0, mesh=MeshSpec((16, 16, 18)))
      >>> params_to_json(p)["mesh"]["shape"]
      [16, 16, 18]
    """
    if params is None:
        return None
    mesh = params.mesh
    return {"method": params.method, "smearing": params.smearing, "cutoff": params.cutoff,
            "mesh": None if mesh is None else {"shape": list(mesh.shape), "order": mesh.order,
                                                "influence": mesh.influence, "aliases": mesh.aliases,
                                                "basis": [list(r) for r in mesh.basis]},
            "k_cutoff": params.k_cutoff, "background": params.background,
            "estimated_error": params.estimated_error}


def params_from_json(d):
    """Inverse of :func:`params_to_json`: the same :class:`jaxlr.CoulombParams` back.

    Example:
      >>> from jaxlr.electrostatics import CoulombParams, MeshSpec
      >>> p = CoulombParams("pme", smearing=1.2, cutoff=6.0, mesh=MeshSpec((16, 16, 18)))
      >>> params_from_json(params_to_json(p)) == p
      True
    """
    from ..electrostatics import CoulombParams, MeshSpec

    if d is None:
        return None
    mesh = d.get("mesh")
    if mesh is not None:
        mesh = MeshSpec(shape=tuple(mesh["shape"]), order=int(mesh["order"]), influence=mesh["influence"],
                        aliases=int(mesh["aliases"]), basis=tuple(tuple(r) for r in mesh["basis"]))
    return CoulombParams(method=d["method"], smearing=d["smearing"], cutoff=d["cutoff"], mesh=mesh,
                         k_cutoff=d["k_cutoff"], background=bool(d["background"]),
                         estimated_error=d["estimated_error"])


class ForceField:
    """A sum of jax-md energy terms with one neighbour list each (internal to the MD driver).

    Attributes:
      name: "nacl", "nacl-qeq" or "checkpoint:<folder>" / "potential".
      neighbor_fns: tuple of jax-md ``NeighborListFns``, one per term.
      terms: tuple of energy functions ``term(R, neighbor, *, box=None, perturbation=None)``.
      qeq: the :class:`jaxlr.md.QeqEnergy` of the first term, or None.
      list_cutoff: the longest neighbour-list reach (cutoff + skin, Å); the box must stay
        at least twice as wide (minimum image).
      fixed_charges: (N,) charges (e) of a fixed-charge model, or None.
      has_charges: the model produces charges (fixed, equilibrated or predicted).
      static: JSON-able record of the static choices (PME parameters, cutoffs), so a
        restart rebuilds the very same energy.
      description: one line for logs.
    """

    def __init__(self, name, neighbor_fns, terms, *, qeq=None, list_cutoff, fixed_charges=None,
                 potential_term=None, static=None, description=""):
        self.name = name
        self.neighbor_fns = tuple(neighbor_fns)
        self.terms = tuple(terms)
        self.qeq = qeq
        self.list_cutoff = float(list_cutoff)
        self.fixed_charges = fixed_charges
        self._potential = potential_term
        self.static = static or {}
        self.description = description
        self.has_charges = qeq is not None or fixed_charges is not None or self._predicts_charges()

    def _predicts_charges(self) -> bool:
        if self._potential is None:
            return False
        return "charges" in getattr(self._potential.potential, "predicts", ())

    def energy(self, R, neighbor, *, guess=None, **kwargs):
        """Total potential energy (eV) at jax-md positions ``R`` with the tuple of lists (jittable)."""
        total = 0.0
        for k, (term, nb) in enumerate(zip(self.terms, neighbor)):
            if k == 0 and self.qeq is not None:
                total = total + term(R, nb, guess=guess, **kwargs)
            else:
                total = total + term(R, nb, **kwargs)
        return total

    def other_energy(self, R, neighbor, **kwargs):
        """Energy of every term but the Qeq one (``neighbor`` holds their lists only)."""
        total = 0.0
        for term, nb in zip(self.terms[1:], neighbor):
            total = total + term(R, nb, **kwargs)
        return total

    def predicted_charges(self, R, neighbor, **kwargs):
        """(N,) charges (e) of a checkpoint model that predicts them (jittable)."""
        return self._potential.outputs(R, neighbor[0], **kwargs)["charges"]


class ShiftedForceTosiFumi:
    """Shifted-force Tosi–Fumi short range (a jax-md energy function; internal to the driver).

    φ_sf(r) = φ(r) − φ(r_c) − (r − r_c) φ'(r_c) for r < r_c, 0 beyond, with φ the Tosi–Fumi
    pair energy (:func:`jaxlr.md.tosi_fumi_pair`): energy and force both vanish at the
    cutoff, so pairs crossing it do not make the energy jump.  (The plain truncation of
    :func:`jaxlr.md.tosi_fumi_neighbor_list` jumps by up to φ(r_c) ≈ −2 meV per Cl–Cl pair
    at r_c = 5.8 Å, which in a 64-ion melt random-walks the NVE energy by ~10 meV in 40 fs.)
    ``energy_fn(R, neighbor, *, box=None, perturbation=None)`` → eV.  Built by
    :func:`shifted_force_tosi_fumi`.
    """

    def __init__(self, geometry, species, params):
        self._geometry = geometry
        self.species = species
        self.params = params
        rc = geometry.cutoff
        A, sig, C, D = (np.asarray(x, np.float64) for x in (params.A, params.sigma, params.C, params.D))
        rep = A * np.exp((sig - rc) / params.rho)
        table = np.stack([rep - C / rc**6 - D / rc**8,                               # φ(r_c)
                          -rep / params.rho + 6 * C / rc**7 + 8 * D / rc**9], -1)    # φ'(r_c)
        self._shift = table            # [i, j] → (φ(r_c), φ'(r_c))

    @property
    def r_cutoff(self) -> float:
        return self._geometry.cutoff

    def __call__(self, R, neighbor=None, *, box=None, perturbation=None, **kwargs):
        if kwargs:
            raise ValueError(f"unknown keyword argument(s) {sorted(kwargs)}; the short-range energy takes neighbor=, "
                             "box= and perturbation=.")
        geo = self._geometry
        r, nbrs = neighbor_distances(geo, R, neighbor, box, perturbation)   # pairs beyond r_c are masked
        si, sj = self.species[:, None], self.species[nbrs.idx]
        shift = jnp.asarray(self._shift, r.dtype)
        phi = (tosi_fumi_pair(r, si, sj, self.params) - shift[si, sj, 0]
               - (r - geo.cutoff) * shift[si, sj, 1])
        return 0.5 * jnp.sum(jnp.where(nbrs.mask, phi, 0.0))


def shifted_force_tosi_fumi(displacement_fn, box, species, *, r_cutoff: float, dr_threshold: float,
                            capacity_multiplier: float):
    """``(neighbor_fn, energy_fn)`` of :class:`ShiftedForceTosiFumi` (host set-up, fractional coordinates).

    Args:
      displacement_fn: ``jax_md.space.periodic_general(box)`` (fractional).  box: jax-md
      box (columns are lattice vectors, Å).  species: (N,) 0 = Na, 1 = Cl.  r_cutoff: Å.
      dr_threshold: skin (Å).  capacity_multiplier: spare list capacity.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_md import space
      >>> box = jnp.eye(3) * 14.0
      >>> displacement, _ = space.periodic_general(box)
      >>> nf, energy = shifted_force_tosi_fumi(displacement, box, [0, 1], r_cutoff=5.0, dr_threshold=0.5,
      ...                                      capacity_multiplier=1.25)
      >>> R = jnp.asarray([[0.0, 0.0, 0.0], [4.9999 / 14.0, 0.0, 0.0]])     # a Na–Cl pair just inside r_c
      >>> abs(float(energy(R, nf.allocate(R)))) < 1e-7                     # energy → 0 at the cutoff
      True
    """
    from jax_md import partition

    geometry = make_geometry(displacement_fn, box, cutoff=float(r_cutoff), n_atoms=int(len(species)),
                             fractional_coordinates=True, dr_threshold=dr_threshold,
                             capacity_multiplier=capacity_multiplier, format=partition.Dense,
                             what="the Tosi–Fumi cutoff")
    return geometry.neighbor_fn, ShiftedForceTosiFumi(geometry, jnp.asarray(species, jnp.int32), TOSI_FUMI_NACL)


def _box_half_width(box: np.ndarray) -> float:
    return 0.5 * float(perpendicular_widths(box.T).min())


def _nacl_species(numbers: np.ndarray) -> np.ndarray:
    unknown = sorted(set(int(z) for z in numbers) - {11, 17})
    if unknown:
        from ase.data import chemical_symbols

        names = ", ".join(f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else '?'} (Z={z})"
                          for z in unknown)
        raise ValueError(f"the built-in NaCl models know Na and Cl only; the structure also holds {names}.")
    return (numbers == 17).astype(np.int32)


def _tf_cutoff(box: np.ndarray, cutoff, dr_threshold: float) -> float:
    half = _box_half_width(box)
    if cutoff is not None:
        rc = float(cutoff)
        if not (np.isfinite(rc) and rc > 0):
            raise ValueError(f"cutoff (the Tosi–Fumi truncation, Å) must be > 0, got {cutoff!r}.")
        if rc + dr_threshold > half * (1 + 1e-12):
            raise ValueError(f"the box is too small for cutoff={rc:g} Å: cutoff plus the skin ({dr_threshold:g} Å) "
                             f"must not exceed half the smallest box width ({half:.4g} Å). Use a larger box (more "
                             "ions) or a shorter cutoff.")
        return rc
    rc = min(_TF_CUTOFF, half - dr_threshold)
    if rc < _TF_MIN_CUTOFF:
        raise ValueError(f"the box is too small: half its smallest width is {half:.4g} Å, which leaves "
                         f"{rc:.3g} Å for the Tosi–Fumi cutoff after the {dr_threshold:g} Å skin (at least "
                         f"{_TF_MIN_CUTOFF:g} Å needed, i.e. a box at least {2 * (_TF_MIN_CUTOFF + dr_threshold):.3g} Å "
                         "wide). Use more ions (a larger box).")
    return rc


def _load_checkpoint(path):
    from ..train import load

    p = Path(path)
    if (p / "checkpoint").is_dir() and not (p / "config.json").is_file():
        p = p / "checkpoint"
    if not p.is_dir():
        raise ValueError(f"model {str(path)!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor a checkpoint "
                         "folder (config.json + variables.msgpack, or a run folder with checkpoint/).")
    return load(p)


def build_forcefield(model, numbers, box: np.ndarray, displacement_fn, positions, *, accuracy: float,
                     dr_threshold: float, capacity_multiplier: float, cutoff=None, dtype=jnp.float64,
                     static=None, total_charge: float = 0.0) -> ForceField:
    """Build the force field of ``model`` for a periodic box (host; nothing compiled).

    Args:
      model: "nacl", "nacl-qeq", a checkpoint folder (str or Path) or a
        ``(potential, variables)`` pair.
      numbers: (N,) atomic numbers.  box: (3, 3) jax-md box (columns are lattice vectors,
        upper triangular).  displacement_fn: ``space.periodic_general(box)`` (fractional).
      positions: (N, 3) fractional positions (for tuning the PME parameters).
      accuracy: relative RMS force accuracy of PME.  dr_threshold: neighbour-list skin
        (Å).  capacity_multiplier: spare list capacity.  cutoff: Tosi–Fumi truncation (Å)
        of the built-ins; default min(9 Å, half the box − skin).  dtype: floating dtype of
        the run.  static: the ``ForceField.static`` of a previous run (restart: same PME
        parameters and cutoffs).  total_charge: of a checkpoint model's structure (e).

    Returns:
      a :class:`ForceField`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax_md import space
      >>> from jaxlr.md import molten_nacl
      >>> atoms = molten_nacl(64)
      >>> box = atoms.cell.array.T
      >>> displacement, _ = space.periodic_general(jnp.asarray(box))
      >>> ff = build_forcefield("nacl", atoms.numbers, box, displacement, atoms.get_scaled_positions(),
      ...                       accuracy=1e-3, dr_threshold=0.5, capacity_multiplier=1.25,
      ...                       dtype=jnp.zeros(()).dtype.type)
      >>> len(ff.terms), round(ff.static["tf_cutoff"], 2), ff.has_charges
      (2, 5.8, True)

    Raises:
      ValueError: an unknown model name or a folder that is not a checkpoint, species the
        model does not know, a box too small for the cutoffs, an accuracy out of reach.
    """
    numbers = np.asarray(numbers)
    static = dict(static or {})
    kw = dict(dr_threshold=float(dr_threshold), capacity_multiplier=float(capacity_multiplier))
    if isinstance(model, str) and model in BUILTIN_MODELS:
        species = _nacl_species(numbers)
        rc = float(static["tf_cutoff"]) if "tf_cutoff" in static else _tf_cutoff(box, cutoff, float(dr_threshold))
        tf_nbr, tf_energy = shifted_force_tosi_fumi(displacement_fn, box, species, r_cutoff=rc, **kw)
        params = params_from_json(static.get("coulomb"))
        R = jnp.asarray(positions, dtype)
        if model == "nacl":
            q = np.asarray(TOSI_FUMI_NACL.charges)[species]
            c_nbr, c_energy = coulomb_neighbor_list(displacement_fn, box, charges=jnp.asarray(q, dtype),
                                                    accuracy=accuracy, positions_for_tuning=R, params=params, **kw)
            p = c_energy.params
            return ForceField("nacl", (c_nbr, tf_nbr), (c_energy, tf_energy),
                              list_cutoff=max(p.cutoff, rc) + dr_threshold, fixed_charges=q,
                              static={"tf_cutoff": rc, "coulomb": params_to_json(p)},
                              description=f"Tosi–Fumi NaCl, ±1 e point charges (PME mesh {p.mesh.shape}, real-space "
                                          f"cutoff {p.cutoff:.2f} Å, shifted-force short range cut at {rc:.2f} Å)")
        chi = np.asarray(NACL_QEQ.electronegativity)[species]
        hard = np.asarray(NACL_QEQ.hardness)[species]
        sig = np.asarray(NACL_QEQ.sigma)[species]
        tol = 1e-7 if jnp.dtype(dtype) == jnp.float64 else 1e-4
        q_nbr, q_energy = qeq_neighbor_list(displacement_fn, box, electronegativity=jnp.asarray(chi, dtype),
                                            hardness=jnp.asarray(hard, dtype), sigma=jnp.asarray(sig, dtype),
                                            accuracy=accuracy, tol=tol, positions_for_tuning=R, params=params, **kw)
        p = q_energy.params
        return ForceField("nacl-qeq", (q_nbr, tf_nbr), (q_energy, tf_energy), qeq=q_energy,
                          list_cutoff=max(p.cutoff, rc) + dr_threshold,
                          static={"tf_cutoff": rc, "coulomb": params_to_json(p)},
                          description=f"Tosi–Fumi NaCl short range + Qeq charges (PME mesh {p.mesh.shape}, real-space "
                                      f"cutoff {p.cutoff:.2f} Å, shifted-force short range cut at {rc:.2f} Å, PCG tol "
                                      f"{tol:g})")
    if isinstance(model, tuple) and len(model) == 2:
        potential, variables = model
        name = "potential"
    elif isinstance(model, (str, Path)):
        potential, variables = _load_checkpoint(model)
        name = f"checkpoint:{model}"
    else:
        raise ValueError(f"model must be one of {BUILTIN_MODELS}, a checkpoint folder or a (potential, variables) "
                         f"pair, got {type(model).__name__}.")
    from ..models import Potential

    if not isinstance(potential, Potential):
        raise ValueError(f"model {name!r} is not a jaxlr model (got {type(potential).__name__}).")
    known = set(int(z) for z in potential.species)
    unknown = sorted(set(int(z) for z in numbers) - known)
    if unknown:
        from ase.data import chemical_symbols

        raise ValueError(f"the structure holds elements the model does not know: "
                         f"{', '.join(chemical_symbols[z] + f' (Z={z})' for z in unknown)}; the model was trained "
                         f"on {sorted(known)}.")

    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    variables = jax.tree_util.tree_map(cast, variables)   # a new tree; the caller's stays as it was
    nbr, energy = potential_neighbor_list(potential, variables, displacement_fn, box, numbers.astype(np.int64),
                                          total_charge=total_charge, **kw)
    return ForceField(name, (nbr,), (energy,), list_cutoff=float(energy.potential.cutoff) + dr_threshold,
                      potential_term=energy, static={"model_cutoff": float(energy.potential.cutoff)},
                      description=f"{energy.potential.name} model, species {sorted(known)}, cutoff "
                                  f"{energy.potential.cutoff:.2f} Å")


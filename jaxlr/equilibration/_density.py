"""Density coefficients: multipolar charge equilibration in a small atom-centred Gaussian basis.

Charge equilibration (:mod:`jaxlr.equilibration`) generalised from one charge per atom to a few
s-type Gaussians of different widths and p-type (dipole) Gaussians per atom, widths per
species (:class:`GaussianBasis`; normalisation and kernels in :mod:`jaxlr.electrostatics`):

* s function n of atom i: ``g_σ(r − R_i) = (2πσ²)^(−3/2) exp(−|r − R_i|²/2σ²)``, unit
  charge; coefficient ``c_{i,s,n}`` = the charge it carries (e).
* p function m of atom i: ``p_σ,α(r − R_i) = −∂_α g_σ(r − R_i)``, unit dipole along α;
  coefficient ``μ_{i,m} ∈ R³`` = its dipole moment (e·Å).
* per-atom layout of the coefficients ``c_i`` (n_basis = n_s + 3 n_p):
  ``[c_s1 … c_sns, μ_1x, μ_1y, μ_1z, μ_2x, …]``.
* atomic charge ``q_i = Σ_n c_{i,s,n}``, atomic dipole ``μ_i = Σ_m μ_{i,m}`` (s functions
  are centred on R_i and carry no dipole), total dipole ``Σ_i q_i R_i + μ_i``.

The energy minimised over the coefficients is

    E(c) = Σ_i [ b_iᵀ c_i + ½ c_iᵀ H_i c_i ] + ½ cᵀ C c − F·Σ_i (q_i R_i + μ_i)

subject to ``Σ_{i∈f} q_i = Q_f`` for each fragment f (default: one fragment, the total
charge).  ``b_i`` (N, n_basis) is the per-atom linear term ("electronegativities", eV/e
and V for the dipole slots), ``H_i`` (N, n_basis, n_basis) the per-atom local matrix
("hardness", symmetric positive definite), both traced (typically predicted by neural
networks); ``C`` is the exact Coulomb matrix of all s and p Gaussians, self-interactions
and same-atom cross terms included (open boundary, Ewald or PME); ``F`` (V/Å) a uniform
external field (open boundary only).  Stationarity: ``(C + H) c + b − F_terms = B λ`` with
λ_f = ∂E*/∂Q_f the fragments' chemical potentials.  With one s function per atom and no
p functions this is plain Qeq with χ_i = b_i and J_i = H_i.

Rotation: E is invariant when each ``H_i`` and ``b_i`` transform with the atom's basis
(s slots invariant, p slots as vectors) — :func:`assemble_local` and
:func:`assemble_linear` build such terms from scalars (p–p blocks ∝ identity, no s–p
coupling); then charges are invariant and dipoles rotate with the molecule.

Layers: :func:`density_solve` is the pure, jittable core (dense Cholesky or
matrix-free PCG with a PME operator, differentiated implicitly through
``jax.lax.custom_linear_solve``); :func:`density_qeq` is the eager front door (validation,
parameter choice, neighbour list).  :func:`polarizability` differentiates the total
dipole with respect to the field.  :func:`jaxlr.project_density` fits the
basis to a given density in the Coulomb metric (reference coefficients from quantum
chemistry).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..electrostatics._gaussian_multipoles import basis_shells, make_pme_matvec, multipole_matrix, pair_blocks
from ..electrostatics._pme import MeshSpec
from ..system._checks import concrete_value
from ..system._deprecation import renamed_keyword
from ..system._neighbors import Neighbors
from ..units import KE
from ._solvers import SolverInfo, SolverStatus, dense_kkt_solve, implicit_solve, solve_pcg

__all__ = ['GaussianBasis', 'assemble_local', 'assemble_linear', 'DensityParams', 'DensityResult', 'density_solve', 'per_atom_widths']


METHODS = ("auto", "direct", "ewald", "pme")


SOLVERS = ("auto", "dense", "pcg")


# ======================================================================================
# the basis
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class GaussianBasis:
    """Static description of an atom-centred s/p Gaussian basis (hashable; fixes shapes).

    Attributes:
      species: atomic numbers (or any integer labels) that the basis covers, e.g. (1, 8).
      s_widths: per species, the widths σ (Å, > 0) of its s functions — at least one.
      p_widths: per species, the widths (Å, > 0) of its p functions (may be empty);
        ``()`` means no p functions for any species.

    Species with fewer functions than the largest count are padded: every atom has
    ``n_basis = n_s + 3 n_p`` coefficient slots (``n_s``, ``n_p`` the largest counts),
    unused slots are held at zero.  The widths here are defaults: the front doors accept
    ``widths=(s, p)`` arrays of shape (n_species, n_s), (n_species, n_p) instead, which
    may be traced (gradient-based studies of the widths).

    Example:
      >>> basis = GaussianBasis(species=(1, 8), s_widths=((0.4, 0.9), (0.3, 0.6, 1.2)),
      ...                       p_widths=((0.7,), (0.6,)))
      >>> basis.n_s, basis.n_p, basis.n_basis
      (3, 1, 6)
    """

    species: tuple[int, ...]
    s_widths: tuple[tuple[float, ...], ...]
    p_widths: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self):
        species = tuple(int(z) for z in self.species)
        if len(species) == 0 or len(set(species)) != len(species):
            raise ValueError(f"GaussianBasis.species must be distinct integers, got {self.species!r}.")
        s = tuple(tuple(float(w) for w in ws) for ws in self.s_widths)
        p = tuple(tuple(float(w) for w in ws) for ws in self.p_widths) if len(self.p_widths) else ((),) * len(species)
        for name, widths in (("s_widths", s), ("p_widths", p)):
            if len(widths) != len(species):
                raise ValueError(f"GaussianBasis.{name} needs one tuple of widths per species "
                                 f"({len(species)}), got {len(widths)}.")
            for z, ws in zip(species, widths):
                if not all(math.isfinite(w) and w > 0 for w in ws):
                    raise ValueError(f"GaussianBasis.{name} of species {z} must be positive finite widths "
                                     f"(Å), got {ws}.")
        for z, ws in zip(species, s):
            if len(ws) == 0:
                raise ValueError(f"species {z} has no s function: every species needs at least one "
                                 "(it carries the atom's charge).")
        object.__setattr__(self, "species", species)
        object.__setattr__(self, "s_widths", s)
        object.__setattr__(self, "p_widths", p)

    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_s(self) -> int:
        """Number of s slots per atom (largest count over species)."""
        return max(len(ws) for ws in self.s_widths)

    @property
    def n_p(self) -> int:
        """Number of p functions per atom (largest count over species); 3 slots each."""
        return max(len(ws) for ws in self.p_widths)

    @property
    def n_basis(self) -> int:
        """Coefficient slots per atom, n_s + 3 n_p."""
        return self.n_s + 3 * self.n_p

    def width_arrays(self):
        """Padded default widths ``(s (n_species, n_s), p (n_species, n_p))`` (numpy, Å; padding 1)."""
        s = np.ones((self.n_species, self.n_s))
        p = np.ones((self.n_species, self.n_p))
        for a, (ws, wp) in enumerate(zip(self.s_widths, self.p_widths)):
            s[a, :len(ws)] = ws
            p[a, :len(wp)] = wp
        return s, p

    def shell_masks(self):
        """Used shells ``(s (n_species, n_s), p (n_species, n_p))`` (numpy bool)."""
        s = np.arange(self.n_s)[None, :] < np.array([len(w) for w in self.s_widths])[:, None]
        p = np.arange(self.n_p)[None, :] < np.array([len(w) for w in self.p_widths])[:, None]
        return s, p

    def slot_mask(self):
        """Used coefficient slots, (n_species, n_basis) numpy bool."""
        s, p = self.shell_masks()
        return np.concatenate([s, np.repeat(p, 3, axis=1)], axis=1)

    def index(self, species) -> np.ndarray:
        """Position of each atom's species in :attr:`species`, (N,) int (host; concrete input)."""
        z = np.asarray(species)
        if z.ndim != 1 or not (np.issubdtype(z.dtype, np.integer) or np.all(np.mod(z, 1) == 0)):
            raise ValueError(f"species must be a 1-D array of integers (atomic numbers), got {z!r}.")
        z = z.astype(np.int64)
        lookup = {s: a for a, s in enumerate(self.species)}
        missing = sorted(set(z.tolist()) - set(lookup))
        if missing:
            raise ValueError(f"species {missing} are not in the basis (it covers {self.species}); "
                             "add widths for them to the GaussianBasis.")
        return np.array([lookup[s] for s in z.tolist()], dtype=np.int32)

    @staticmethod
    def even_tempered(smallest: float, largest: float, count: int) -> tuple[float, ...]:
        """``count`` geometrically spaced widths from ``smallest`` to ``largest`` (Å).

        Example:
          >>> GaussianBasis.even_tempered(0.25, 1.0, 3)
          (0.25, 0.5, 1.0)
        """
        if count == 1:
            return (float(smallest),)
        return tuple(float(w) for w in np.geomspace(smallest, largest, count))


def assemble_local(ss, pp=None):
    """Rotation-invariant local matrices (N, n_basis, n_basis) from scalar blocks (jittable).

    ``H_i = blockdiag(ss_i, pp_i ⊗ I₃)``: ``ss`` (N, n_s, n_s) couples the s functions
    (eV/e²), ``pp`` (N, n_p, n_p) the p functions (eV/(e·Å)², each Cartesian component
    alike); no s–p coupling.  Both should be symmetric positive definite, e.g.
    ``L Lᵀ + ε I`` from a network output L.

    Example:
      >>> H = assemble_local(jnp.ones((2, 1, 1)), 2.0 * jnp.ones((2, 1, 1)))
      >>> H.shape, float(H[0, 3, 3])
      ((2, 4, 4), 2.0)
    """
    n, ns = ss.shape[0], ss.shape[1]
    n_p = 0 if pp is None else pp.shape[1]
    if pp is None:
        return ss
    big = jnp.einsum("nab,xy->naxby", pp, jnp.eye(3, dtype=pp.dtype)).reshape(n, 3 * n_p, 3 * n_p)
    top = jnp.concatenate([ss, jnp.zeros((n, ns, 3 * n_p), ss.dtype)], axis=2)
    bottom = jnp.concatenate([jnp.zeros((n, 3 * n_p, ns), ss.dtype), big], axis=2)
    return jnp.concatenate([top, bottom], axis=1)


def assemble_linear(s, p=None, n_p: int = 0):
    """Per-atom linear terms (N, n_basis) from s parts (N, n_s) and p parts (N, n_p, 3) or zeros.

    ``s`` are electronegativity-like (eV/e); ``p`` (V, i.e. eV/(e·Å)) must rotate as vectors
    (e.g. built from bond vectors) for rotation-invariant physics; ``p=None`` gives
    ``n_p`` zero p functions.

    Example:
      >>> assemble_linear(jnp.ones((2, 1)), n_p=1).shape
      (2, 4)
    """
    n = s.shape[0]
    if p is None:
        return jnp.concatenate([s, jnp.zeros((n, 3 * n_p), s.dtype)], axis=1)
    return jnp.concatenate([s, p.reshape(n, -1)], axis=1)


# ======================================================================================
# results and static parameters
# ======================================================================================
@dataclasses.dataclass(frozen=True)
class DensityParams:
    """Static choices of a density solve (hashable).

    Attributes:
      method: "direct" (open boundary), "ewald" (dense) or "pme" (matrix-free).
      solver: "dense" (Cholesky) or "pcg" (projected preconditioned CG).
      smearing, cutoff: Ewald smearing and real-space cutoff (Å), periodic only.
      k_cutoff: Ewald reciprocal cutoff (1/Å).  mesh: :class:`jaxlr.MeshSpec` for PME.
      background: neutralising background for a net charge in a periodic cell.
      tol, maxiter: PCG relative residual tolerance and iteration limit.
    """

    method: str
    solver: str = "dense"
    smearing: float | None = None
    cutoff: float | None = None
    k_cutoff: float | None = None
    mesh: MeshSpec | None = None
    background: bool = False
    tol: float = 1e-8
    maxiter: int = 500


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DensityResult(SolverStatus):
    """Output of :func:`density_qeq` / :func:`density_solve` (a pytree).

    Attributes:
      coefficients: (N, n_basis) per-atom layout ``[c_s…, μ_1xyz, …]`` (e, e·Å); unused
        slots (species with fewer functions) are 0.
      charges: (N,) atomic charges q_i = Σ s coefficients (e).
      dipoles: (N, 3) atomic dipoles μ_i = Σ p coefficients (e·Å).
      total_dipole: (3,) Σ_i q_i R_i + μ_i (e·Å) with the positions as given (for a
        periodic cell only meaningful for neutral fragments kept whole).
      energy: () E at the minimum (eV), local + linear + Coulomb + field terms.
      chemical_potential: (F,) λ_f = ∂E/∂Q_f (V).
      info: :class:`jaxlr.SolverInfo` — converged () bool, iterations () int (0 for
        dense), residual () relative KKT residual; also readable as ``.converged``,
        ``.iterations`` and ``.residual``.
      params: the :class:`DensityParams` used (static).
    """

    coefficients: jax.Array
    charges: jax.Array
    dipoles: jax.Array
    total_dipole: jax.Array
    energy: jax.Array
    chemical_potential: jax.Array
    info: SolverInfo
    params: DensityParams = dataclasses.field(metadata=dict(static=True))


# ======================================================================================
# the functional core
# ======================================================================================
def s_slots(ns: int, n_p: int) -> np.ndarray:
    return np.array([True] * ns + [False] * (3 * n_p))


def density_solve(positions, sigma_s, sigma_p, linear, local, *, fragments=None, fragment_charges=None,
                  active=None, field=None, cell=None, smearing=None, neighbors: Neighbors | None = None,
                  kvectors=None, method: str = "direct", mesh: MeshSpec | None = None,
                  background: bool = False, solver: str = "dense", tol: float = 1e-8, maxiter: int = 500,
                  guess=None, x0=None) -> DensityResult:
    """Minimise the multipolar Qeq energy (module docstring) — the pure, jittable core.

    Args:
      positions: (N, 3) Å.
      sigma_s: (N, n_s) s widths per atom (Å, > 0; any positive value in unused slots).
      sigma_p: (N, n_p) p widths per atom (Å); n_p may be 0.
      linear: (N, n_basis) linear terms b_i (eV/e per unit coefficient).
      local: (N, n_basis, n_basis) local matrices H_i (symmetrised here); the system must be
        positive definite on the constraint set (H_i SPD suffices).
      fragments: (N,) int labels 0…F−1 (default: all 0).
      fragment_charges: (F,) totals Q_f (e); default ``[0.0]``.
      active: (N, n_basis) bool, used slots (default all); unused slots are held at 0.
      field: (3,) uniform external field (V/Å), open boundary only; None for none.
      cell, smearing, neighbors, kvectors, background: periodic sums as in
        :func:`jaxlr.electrostatics.multipole_matrix`.
      method: "direct", "ewald" or "pme" (static).  mesh: :class:`jaxlr.MeshSpec` for "pme".
      solver: "dense" (Cholesky of the assembled matrix; not with "pme") or "pcg" (static).
      tol, maxiter: PCG tolerance on the relative projected residual and iteration cap.
      guess: optional (N, n_basis) warm start for PCG (e.g. the previous MD step).
      x0: deprecated spelling of ``guess``.

    Returns:
      :class:`DensityResult`.  Derivatives of every output with respect to positions,
      widths, linear and local terms, field, fragment charges, cell and smearing follow
      from the implicit function theorem (one more solve per derivative direction).

    Example:
      >>> R = jnp.array([[0.0, 0, 0], [1.5, 0, 0]])
      >>> res = density_solve(R, jnp.full((2, 1), 0.6), jnp.zeros((2, 0)),
      ...                     jnp.array([[-1.0], [1.0]]), jnp.full((2, 1, 1), 5.0))
      >>> bool(res.charges[0] > 0), round(float(res.charges.sum()), 12)
      (True, 0.0)
    """
    guess = renamed_keyword("x0", "guess", x0, guess, default=None, where="density_solve")
    dtype = positions.dtype
    n, ns = sigma_s.shape
    n_p = sigma_p.shape[1]
    nb = ns + 3 * n_p
    if linear.shape != (n, nb) or local.shape != (n, nb, nb):
        raise ValueError(f"linear must be ({n}, {nb}) and local ({n}, {nb}, {nb}); got {linear.shape}, "
                         f"{local.shape}.")
    if solver == "dense" and method == "pme":
        raise ValueError("method='pme' is matrix-free: use solver='pcg'.")
    if field is not None and cell is not None:
        raise ValueError("a uniform external field is supported for an open boundary only.")
    active = jnp.ones((n, nb), bool) if active is None else jnp.asarray(active, bool)
    fragment_charges = jnp.zeros((1,), dtype) if fragment_charges is None else jnp.asarray(fragment_charges, dtype)
    n_frag = fragment_charges.shape[0]
    fragments = jnp.zeros((n,), jnp.int32) if fragments is None else jnp.asarray(fragments)
    onehot = (fragments[:, None] == jnp.arange(n_frag)[None, :]).astype(dtype)
    s_active = active & jnp.asarray(s_slots(ns, n_p))[None, :]
    constraint = (onehot[:, None, :] * s_active[:, :, None].astype(dtype)).reshape(n * nb, n_frag)

    pair_active = active[:, :, None] & active[:, None, :]
    hess = 0.5 * (local + jnp.swapaxes(local, 1, 2))
    hess = jnp.where(pair_active, hess, jnp.eye(nb, dtype=dtype))
    rhs = -linear
    if field is not None:
        field = jnp.asarray(field, dtype)
        potential = positions @ field                                      # F·R_i
        rhs = rhs + jnp.concatenate([jnp.broadcast_to(potential[:, None], (n, ns)),
                                     jnp.tile(field[None, :], (n, n_p))], axis=1)
    rhs = jnp.where(active, rhs, 0.0).reshape(-1)
    flat_active = active.reshape(-1)

    def local_matvec(x):
        return jnp.einsum("nab,nb->na", hess, x.reshape(n, nb)).reshape(-1)

    if method in ("direct", "ewald"):
        if (method == "direct") != (cell is None):
            raise ValueError("method='direct' is the open boundary (cell=None); 'ewald' needs a cell.")
        coul = multipole_matrix(positions, sigma_s, sigma_p, cell=cell, smearing=smearing, neighbors=neighbors,
                                kvectors=kvectors, background=background)
        coul = jnp.where(flat_active[:, None] & flat_active[None, :], coul, 0.0)
        rows = jnp.arange(n)
        amat = coul.reshape(n, nb, n, nb).at[rows, :, rows, :].add(hess).reshape(n * nb, n * nb)

        def matvec(x):
            return amat @ x

        diagonal = jnp.diagonal(amat)
    elif method == "pme":
        if cell is None:
            raise ValueError("method='pme' needs a periodic cell.")
        pme_matvec = make_pme_matvec(mesh)

        def matvec(x):
            xc = jnp.where(active, x.reshape(n, nb), 0.0)
            y = pme_matvec(xc, positions, sigma_s, sigma_p, cell, smearing, neighbors, background)
            return jnp.where(active, y, 0.0).reshape(-1) + local_matvec(x)

        shells = basis_shells(sigma_s, sigma_p)
        onsite = KE * pair_blocks(jnp.zeros((n, 3), dtype), shells, shells, ns)   # bare self-interaction
        diagonal = jnp.where(active, jnp.diagonal(onsite, axis1=1, axis2=2), 0.0).reshape(-1)
        diagonal = diagonal + jnp.diagonal(hess, axis1=1, axis2=2).reshape(-1)
        amat = None
    else:
        raise ValueError(f"unknown method {method!r}; choose 'direct', 'ewald' or 'pme'.")

    if solver == "dense":
        def solve(b, c):
            return dense_kkt_solve(amat, b, constraint, c)
    elif solver == "pcg":
        start = None if guess is None else jnp.asarray(guess, dtype).reshape(-1)

        def solve(b, c):
            return solve_pcg(matvec, b, constraint, c, diagonal, x0=start, tol=tol, maxiter=maxiter)
    else:
        raise ValueError(f"unknown solver {solver!r}; choose 'dense' or 'pcg'.")

    x, lam, info = implicit_solve(matvec, rhs, constraint, fragment_charges, solve)
    energy = 0.5 * jnp.vdot(x, matvec(x)) - jnp.vdot(rhs, x)
    coefficients = x.reshape(n, nb)
    charges = jnp.sum(coefficients[:, :ns], axis=1)
    dipoles = jnp.sum(coefficients[:, ns:].reshape(n, n_p, 3), axis=1)
    total_dipole = charges @ positions + jnp.sum(dipoles, axis=0)
    params = DensityParams(method=method, solver=solver, mesh=mesh, background=background, tol=float(tol),
                           maxiter=int(maxiter))
    return DensityResult(coefficients=coefficients, charges=charges, dipoles=dipoles, total_dipole=total_dipole,
                         energy=energy, chemical_potential=lam, info=info, params=params)


def per_atom_widths(index, s_widths, p_widths, basis: GaussianBasis):
    """Per-atom widths ``(sigma_s (N, n_s), sigma_p (N, n_p))`` and the used-slot mask (N, n_basis).

    ``index`` (N,) from :meth:`GaussianBasis.index`; ``s_widths`` (n_species, n_s) and
    ``p_widths`` (n_species, n_p) may be traced.  Unused shells get width 1 (double
    ``where``: their gradient is zero, never NaN).
    """
    s_mask, p_mask = basis.shell_masks()
    index = np.asarray(index)
    sm, pm = jnp.asarray(s_mask[index]), jnp.asarray(p_mask[index])
    sigma_s = jnp.where(sm, jnp.where(sm, s_widths[index], 1.0), 1.0)
    sigma_p = jnp.where(pm, jnp.where(pm, p_widths[index], 1.0), 1.0)
    return sigma_s, sigma_p, basis.slot_mask()[index]


# ======================================================================================
# host preparation: validation and parameters
# ======================================================================================
def check_finite(name, value):
    v = concrete_value(value)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or inf; pass finite numbers.")
    return v


def check_shape(name, value, shape):
    if np.shape(value) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {np.shape(value)}.")


def check_local(local_np, slot_mask):
    """Symmetric positive definite local matrices on the used slots (host, batched per slot pattern)."""
    patterns, groups = np.unique(slot_mask, axis=0, return_inverse=True)
    for g, used in enumerate(patterns):
        atoms = np.flatnonzero(groups.reshape(-1) == g)
        h = local_np[atoms][:, used][:, :, used]
        asym = np.max(np.abs(h - np.swapaxes(h, 1, 2)), axis=(1, 2))
        scale = np.maximum(np.max(np.abs(h), axis=(1, 2)), 1e-300)
        bad = np.flatnonzero(asym > 1e-8 * scale)
        if bad.size:
            raise ValueError(f"local matrix of atom {atoms[bad[0]]} is not symmetric; pass symmetric H_i "
                             "(e.g. L Lᵀ).")
        low = np.linalg.eigvalsh(0.5 * (h + np.swapaxes(h, 1, 2))).min(axis=1)
        bad = np.flatnonzero(~(low > 0))
        if bad.size:
            raise ValueError(f"local matrix of atom {atoms[bad[0]]} is not positive definite (smallest eigenvalue "
                             f"{low[bad[0]]:.3g}); it would make the system indefinite. Pass H_i = L Lᵀ + εI with "
                             "ε > 0, e.g. via jaxlr.equilibration.assemble_local.")


def fragment_totals(fragments, fragment_charges, total_charge, n):
    """Validated (labels (N,) int32 numpy, totals (F,) array-like)."""
    if np.ndim(total_charge) == 1:
        raise ValueError(f"total_charge must be one real number (e), got shape {np.shape(total_charge)} — "
                         "per-fragment totals go in fragment_charges= (with fragments= labelling the atoms).")
    check_shape("total_charge", total_charge, ())
    if isinstance(total_charge, (str, bytes)) or not np.issubdtype(np.asarray(total_charge).dtype, np.number):
        raise ValueError(f"total_charge must be one real number (e), got {total_charge!r}.")
    check_finite("total_charge", total_charge)
    if fragments is None:
        if fragment_charges is not None:
            raise ValueError("fragment_charges needs fragments= (per-atom labels 0…F−1).")
        return np.zeros(n, np.int32), jnp.reshape(jnp.asarray(total_charge), (1,))
    labels = concrete_value(fragments)
    if labels is None:
        raise ValueError("fragments must be concrete integer labels (they fix the constraint structure).")
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.all(np.mod(labels, 1) == 0):
        raise ValueError(f"fragments must be ({n},) integer labels, got shape {labels.shape}.")
    labels = labels.astype(np.int64)
    if fragment_charges is not None and np.ndim(fragment_charges) != 1:
        raise ValueError("fragment_charges must be a 1-D array (one total per fragment).")
    n_frag = int(labels.max()) + 1 if fragment_charges is None else int(np.shape(fragment_charges)[0])
    if labels.min() < 0 or labels.max() >= n_frag or len(np.unique(labels)) != n_frag:
        raise ValueError(f"fragments must use every label 0…F−1 (F = {n_frag} fragment charges); got labels "
                         f"{np.unique(labels).tolist()}.")
    if fragment_charges is None:
        total = concrete_value(total_charge)
        if total is not None and float(total) != 0.0:
            raise ValueError("a charged system with several fragments needs fragment_charges= (one total "
                             "per fragment).")
        return labels.astype(np.int32), jnp.zeros((n_frag,))
    charges = jnp.asarray(fragment_charges)
    q_np = check_finite("fragment_charges", fragment_charges)
    t_np = concrete_value(total_charge)
    # as in jaxlr.qeq: total_charge = 0 (the default) means "given by the fragment totals"
    if q_np is not None and t_np is not None and float(t_np) != 0.0 and abs(
            float(np.sum(q_np)) - float(t_np)) > 1e-9 * max(1.0, float(np.sum(np.abs(q_np)))):
        raise ValueError(f"fragment_charges sum to {float(np.sum(q_np)):.6g} e but total_charge is "
                         f"{float(t_np):.6g} e; make them agree (or leave total_charge at 0).")
    return labels.astype(np.int32), charges


def validated_widths(basis, widths, dtype):
    if widths is None:
        s, p = basis.width_arrays()
        return jnp.asarray(s, dtype), jnp.asarray(p, dtype)
    if not isinstance(widths, (tuple, list)) or len(widths) != 2:
        raise ValueError("widths must be a pair (s_widths (n_species, n_s), p_widths (n_species, n_p)).")
    s, p = widths
    check_shape("widths[0] (s widths)", s, (basis.n_species, basis.n_s))
    check_shape("widths[1] (p widths)", p, (basis.n_species, basis.n_p))
    s_mask, p_mask = basis.shell_masks()
    for name, w, m in (("s widths", s, s_mask), ("p widths", p, p_mask)):
        v = check_finite(name, w)
        if v is not None and np.any(v[m] <= 0):
            raise ValueError(f"{name} must be strictly positive (Å), got min {v[m].min():g}.")
    return jnp.asarray(s, dtype), jnp.asarray(p, dtype)

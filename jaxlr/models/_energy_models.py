"""The five energy models as flax.linen modules acting on ONE padded structure.

Each module maps an unbatched :class:`jaxlr.models.AtomsBatch` entry to a dict with at
least ``"energy"`` (eV) and, depending on the model, ``"atom_energies"``, ``"charges"``,
``"dipole"``, ``"coefficients"``.  :class:`jaxlr.models.Potential` vmaps them over a batch
and differentiates the energy for forces and stress.  Every module also has
``descriptors(s) → {name: (N, D)}``, the raw features whose standardisation statistics
:meth:`Potential.init` sets from data (collection ``"stats"``).

Energies: E = Σ_i [s_E · ε(f_i) + e_{Z_i}] (+ electrostatics), with per-species offsets
e_Z (least squares on the training set) and an energy scale s_E held in ``"stats"``.
Every model takes ``repulsion=True`` to add the fixed ZBL core repulsion
(:mod:`jaxlr.models._repulsion`, switched off at the covalent-radius sum of each pair or at
``repulsion_cutoff``) that the network then corrects: E += ½ Σ_{i≠j} u(r_ij/r_s) E_ZBL(r_ij),
the per-atom halves included in ``atom_energies``.  The default (off) is the model as before.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..data._padding import far_padding
from ..equilibration._density import density_solve
from ..equilibration._qeq import qeq_solve
from ._descriptors import LocalSpec, LodeSpec, local_invariants, local_vectors, multiscale_invariants
from ._electrostatics import CoulombSpec, coulomb_kwargs, multipole_switch_correction, structure_coulomb_energy
from ._nets import SpeciesMLP, Standardize, species_parameter
from ._repulsion import repulsion_energies

__all__ = ["LocalModel", "LodeModel", "LatentChargeModel", "QeqModel", "DensityModel", "MODELS"]


def _open_safe(s):
    """Open-boundary structures get their padding atoms moved far apart (see far_padding)."""
    if s.cell is None:
        return dataclasses.replace(s, positions=far_padding(s.positions, s.atom_mask))
    return s


class _Base(nn.Module):
    """Shared pieces: species bookkeeping, the short-range network, energy statistics."""

    def n_species(self) -> int:
        return len(self.species)

    def _stats_scalars(self, dtype):
        n = len(self.species)
        offsets = self.variable("stats", "energy_offsets", lambda: jnp.zeros(n, dtype))
        scale = self.variable("stats", "energy_scale", lambda: jnp.ones((), dtype))
        return offsets.value, scale.value

    def short_range(self, s, features, name="energy_net"):
        """Per-atom short-range energies (N,) from standardised features (plus the ZBL prior's
        per-atom half pair energies when ``repulsion`` is on)."""
        offsets, scale = self._stats_scalars(s.positions.dtype)
        net = SpeciesMLP(len(self.species), tuple(self.hidden), 1, self.activation, out_scale=0.1, name=name)
        eps = net(features, s.species)[:, 0]
        e0 = jnp.where(s.species >= 0, offsets[jnp.clip(s.species, 0)], 0.0)
        if not self.repulsion:
            if self.repulsion_cutoff is not None:
                raise ValueError(f"repulsion_cutoff={self.repulsion_cutoff} is set but repulsion=False; set "
                                 "repulsion=True to add the ZBL prior, or leave repulsion_cutoff as None.")
            return scale * eps + e0
        zbl = repulsion_energies(s.positions, s.species, s.neighbors, self.species, cutoff=self.local.cutoff,
                                 radius=self.repulsion_cutoff, cell=s.cell)
        return scale * eps + e0 + zbl

    def descriptors(self, s):
        """Raw features ``{stats name: (N, D)}`` whose standardisation Potential.init fits."""
        return {"std_local": local_invariants(_open_safe(s), self.local, len(self.species))}

    def local_features(self, s):
        return Standardize(name="std_local")(local_invariants(s, self.local, len(self.species)))

    def per_atom(self, name: str, value: float, s):
        """A learnable positive per-species parameter gathered per atom (1 on padding atoms)."""
        table = species_parameter(self, name, len(self.species), value, s.positions.dtype)
        return jnp.where(s.atom_mask, table[jnp.clip(s.species, 0)], 1.0)

    def solver_options(self, s):
        """Coulomb keyword arguments plus the solver choice of a charge solve on ``s``:
        dense for open boundaries, PME-matvec PCG for periodic cells (with the background)."""
        periodic = s.cell is not None
        return dict(coulomb_kwargs(s, self.coulomb), solver="pcg" if periodic else "dense", background=periodic,
                    tol=self.tol, maxiter=self.maxiter)

    def width_names(self) -> tuple:
        """Names of the learned per-species Gaussian widths in ``params`` (softplus-parametrised)."""
        return ("sigma",) if hasattr(self, "coulomb") else ()

    def initial_widths(self) -> tuple:
        """The initial Gaussian widths (Å) of the hyperparameters (for planning before training)."""
        return (float(self.sigma),) if hasattr(self, "coulomb") else ()

    def dipole(self, s, charges, atomic=None):
        d = jnp.sum(charges[:, None] * jnp.where(s.atom_mask[:, None], s.positions, 0.0), axis=0)
        return d if atomic is None else d + jnp.sum(atomic, axis=0)


class LocalModel(_Base):
    """Short-range model: per-species network on local invariants (the baseline).

    Attributes:
      species: atomic numbers (sorted).  local: :class:`LocalSpec`.  hidden: hidden
      widths (``()`` for a linear model).  activation: see :data:`jaxlr.models._nets.ACTIVATIONS`.
      repulsion: add the fixed ZBL screened nuclear repulsion of every pair closer than its
        switch radius (a prior the network corrects; keeps MD from collapsing where the
        training data have no short distances).  Default False (no prior).
      repulsion_cutoff: the switch radius r_s (Å, ≤ ``local.cutoff``) for every pair, or
        None (default): the sum of the two covalent radii (0.97 Å for O–H), capped at
        ``local.cutoff``.  Only with ``repulsion=True``.

    Example:
      >>> import jax
      >>> from jaxlr.models import build_potential
      >>> from jaxlr.testing import toy_batch
      >>> pot = build_potential("local", species=(1, 8), local=dict(cutoff=3.0, max_radial=2, max_angular=1),
      ...                       hidden=(4,), repulsion=True)
      >>> batch = toy_batch(pot.species, cutoff=pot.cutoff)
      >>> pot.apply(pot.init(jax.random.PRNGKey(0), batch), batch).energy.shape
      (2,)
    """

    species: tuple
    local: LocalSpec = LocalSpec()
    hidden: Sequence[int] = (64, 64)
    activation: str = "silu"
    repulsion: bool = False
    repulsion_cutoff: float | None = None

    @nn.compact
    def __call__(self, s):
        s = _open_safe(s)
        e = self.short_range(s, self.local_features(s))
        return {"energy": jnp.sum(e), "atom_energies": e}


class LodeModel(_Base):
    """Multi-scale LODE model (Grisafi & Ceriotti): local ⊕ [ν=1 LODE, ρ ⊗ V] invariants.

    With ``hidden=()`` it is linear in the standardised features and
    :func:`jaxlr.models.fit_ridge` solves it in closed form.

    Attributes:
      species, local, hidden, activation, repulsion, repulsion_cutoff: as :class:`LocalModel`.
      lode: :class:`LodeSpec`.
      use_local: include the local invariants (else LODE features only).
    """

    species: tuple
    local: LocalSpec = LocalSpec()
    lode: LodeSpec = LodeSpec()
    hidden: Sequence[int] = (64, 64)
    activation: str = "silu"
    use_local: bool = True
    repulsion: bool = False
    repulsion_cutoff: float | None = None

    def descriptors(self, s):
        s = _open_safe(s)
        out = {"std_lode": multiscale_invariants(s, self.lode, len(self.species))}
        if self.use_local:
            out["std_local"] = local_invariants(s, self.local, len(self.species))
        return out

    def features(self, s):
        parts = [Standardize(name="std_lode")(multiscale_invariants(s, self.lode, len(self.species)))]
        if self.use_local:
            parts.insert(0, self.local_features(s))
        return jnp.concatenate(parts, axis=1)

    @nn.compact
    def __call__(self, s):
        s = _open_safe(s)
        e = self.short_range(s, self.features(s))
        return {"energy": jnp.sum(e), "atom_energies": e}


def _fragment_shift(q, s):
    """Shift predicted charges uniformly within each fragment so Σ_{i∈f} q_i = Q_f."""
    nf = s.fragment_charges.shape[0]
    onehot = (s.fragments[:, None] == jnp.arange(nf)).astype(q.dtype) * s.atom_mask[:, None]
    count = jnp.sum(onehot, axis=0)
    excess = (s.fragment_charges - onehot.T @ q) / jnp.maximum(count, 1.0)
    return jnp.where(s.atom_mask, q + onehot @ excess, 0.0)


class LatentChargeModel(_Base):
    """Latent-charge model (LES / 3G-HDNNP family).

    A second network predicts a charge per atom from local invariants; the charges are
    shifted uniformly within each fragment to its total charge; their Coulomb energy
    (Gaussian charges, learnable width per species) is added to the short-range energy.
    Periodic cells: PME planned for widths up to ``coulomb.sigma_max`` with the real-space
    kernel switched off smoothly at ``coulomb.cutoff`` (:mod:`jaxlr.models._electrostatics`),
    so the energy is smooth and independent of the neighbour-list skin.

    Attributes:
      species, local, hidden, activation, repulsion, repulsion_cutoff: as :class:`LocalModel`.
      coulomb: :class:`CoulombSpec`.
      charge_hidden: hidden widths of the charge network.
      sigma: initial Gaussian width per species (Å).
    """

    species: tuple
    local: LocalSpec = LocalSpec()
    coulomb: CoulombSpec = CoulombSpec()
    hidden: Sequence[int] = (64, 64)
    charge_hidden: Sequence[int] = (32,)
    activation: str = "silu"
    sigma: float = 1.0
    repulsion: bool = False
    repulsion_cutoff: float | None = None

    @nn.compact
    def __call__(self, s):
        s = _open_safe(s)
        f = self.local_features(s)
        e = self.short_range(s, f)
        raw = SpeciesMLP(len(self.species), tuple(self.charge_hidden), 1, self.activation, name="charge_net")(
            f, s.species)[:, 0]
        q = _fragment_shift(raw, s)
        sig = self.per_atom("sigma", self.sigma, s)
        e_coul = structure_coulomb_energy(s, q, sig, self.coulomb, background=s.cell is not None)
        return {"energy": jnp.sum(e) + e_coul, "atom_energies": e, "charges": q, "dipole": self.dipole(s, q)}


class QeqModel(_Base):
    """Charge-equilibration model (4G-HDNNP family).

    χ_i from a network on local invariants, learnable hardness J_Z and Gaussian width σ_Z
    per species; the charges minimise Σ χ_i q_i + ½ J_i q_i² + E_coul(q) under the
    fragment / total-charge constraints, solved inside the model (dense for open
    boundaries, PME-matvec PCG for periodic cells) and differentiated implicitly.
    E = short-range + equilibrated electrostatic energy (periodic: the solve over the pairs
    within ``coulomb.cutoff``, the energy with the smoothly switched real-space kernel).

    Attributes:
      species, local, hidden, activation, coulomb, repulsion, repulsion_cutoff: as
      :class:`LatentChargeModel`.
      chi_hidden: hidden widths of the electronegativity network.  hardness, sigma:
      initial J (V/e) and σ (Å) for every species.  tol, maxiter: PCG settings.

    A uniform field ``batch.field`` F (V/Å, open boundary only) adds −F·Σ_i q_i R_i to the
    Qeq energy, i.e. shifts χ_i by −F·R_i with χ_i itself (a function of the geometry)
    unchanged: the charges respond and ∂μ/∂F is the model's polarisability
    (:func:`jaxlr.models.polarizability`).
    """

    species: tuple
    local: LocalSpec = LocalSpec()
    coulomb: CoulombSpec = CoulombSpec()
    hidden: Sequence[int] = (64, 64)
    chi_hidden: Sequence[int] = (32,)
    activation: str = "silu"
    hardness: float = 10.0
    sigma: float = 1.0
    tol: float = 1e-8
    maxiter: int = 300
    repulsion: bool = False
    repulsion_cutoff: float | None = None

    @nn.compact
    def __call__(self, s):
        s = _open_safe(s)
        f = self.local_features(s)
        e = self.short_range(s, f)
        chi = SpeciesMLP(len(self.species), tuple(self.chi_hidden), 1, self.activation, name="chi_net")(
            f, s.species)[:, 0]
        hard = self.per_atom("hardness", self.hardness, s)
        sig = self.per_atom("sigma", self.sigma, s)
        chi_f = chi
        if s.field is not None:      # a uniform field F adds −F·Σ q_i R_i: χ_i → χ_i − F·R_i
            if s.cell is not None:
                raise ValueError("a uniform external field is supported for an open boundary only.")
            chi_f = chi - jnp.where(s.atom_mask, s.positions @ jnp.asarray(s.field, s.positions.dtype), 0.0)
        q, _, _ = qeq_solve(s.positions, chi_f, hard, sig, fragments=s.fragments,
                            fragment_charges=s.fragment_charges, atom_mask=s.atom_mask, **self.solver_options(s))
        e_coul = structure_coulomb_energy(s, q, sig, self.coulomb, background=s.cell is not None)
        e_qeq = jnp.sum(jnp.where(s.atom_mask, chi_f * q + 0.5 * hard * q * q, 0.0)) + e_coul
        return {"energy": jnp.sum(e) + e_qeq, "atom_energies": e, "charges": q, "dipole": self.dipole(s, q),
                "electronegativity": chi}


class DensityModel(_Base):
    """Density-coefficient model (Thomas–Baldwin–Csányi–Ortner family).

    Every atom carries ``n_s`` s-type Gaussians and ``n_p`` p-type (dipole) Gaussians with
    learnable widths per species.  Networks on local invariants predict the linear term
    b_i and a positive-definite local matrix H_i = A_Z A_Zᵀ + L_i L_iᵀ + ε·1 (A_Z learnable
    per species, L_i lower triangular from a network); the multipolar charge equilibration
    is solved inside the model (open boundary: dense; periodic: PME with dipoles, PCG, the
    real-space pair blocks switched off smoothly at ``coulomb.cutoff``).
    Outputs the coefficients, charges, atomic dipoles through ``dipole`` (total), and
    responds to ``batch.field``.

    Attributes:
      species, local, coulomb, hidden, activation, repulsion, repulsion_cutoff: as
      :class:`QeqModel`.  n_s, n_p:
      s and p functions per atom.  s_widths, p_width: initial widths (Å).
      hardness: initial diagonal of A_Z A_Zᵀ (V/e).
      basis: per-element basis instead of ``n_s, n_p, s_widths, p_width``: a sequence of
        ``(Z, s widths, p widths)`` (Å, narrowest first), e.g. the reference basis of a
        data set (:func:`jaxlr.data.reference_basis`), so that predicted and reference
        coefficients live in the same functions.  Elements with fewer functions get
        inactive padding slots (coefficient exactly 0), as in the data layout.
      learn_widths: whether the widths are trained (True) or held at their initial values.
      promolecule: a fixed, neutral density per element that the model predicts a
        deviation from: a sequence of ``(Z, coefficients)`` in the padded per-atom layout
        (length ``n_basis``, s coefficients summing to 0, p coefficients 0 — spherical, so
        the model stays rotationally invariant), e.g. each element's mean
        reference coefficients made neutral (:func:`jaxlr.data.mean_coefficients`).  The
        output density is ``c_fix + x``, x from the solve.  A neutral atom-centred density
        has no long-range field, so its electrostatics (within an atom and between
        overlapping neighbours) is short-ranged and left to the local network: only x
        enters the Coulomb energy, and c_fix only the outputs (coefficients, atomic
        dipoles) and the energy in an external field.  This lets a basis with a function
        holding a nucleus (the water data's 0.05 Å oxygen s function, ≈ +6.4 e) be
        learned as a small deviation instead of against a ~10³ eV self-interaction.
    """

    species: tuple
    local: LocalSpec = LocalSpec()
    coulomb: CoulombSpec = CoulombSpec()
    hidden: Sequence[int] = (64, 64)
    coef_hidden: Sequence[int] = (32,)
    activation: str = "silu"
    n_s: int = 2
    n_p: int = 1
    s_widths: tuple = (0.5, 1.2)
    p_width: float = 0.8
    hardness: float = 10.0
    tol: float = 1e-8
    maxiter: int = 300
    basis: tuple | None = None
    learn_widths: bool = True
    promolecule: tuple | None = None
    repulsion: bool = False
    repulsion_cutoff: float | None = None

    def promolecule_table(self):
        """(S, n_basis) fixed coefficients per species channel (zeros without a promolecule)."""
        nb = self.n_basis()
        table = np.zeros((len(self.species), nb))
        if self.promolecule is None:
            return table
        given = {}
        for entry in self.promolecule:
            if len(entry) != 2 or len(entry[1]) != nb:
                raise ValueError(f"promolecule entries are (Z, {nb} coefficients), got {entry!r}.")
            given[int(entry[0])] = np.asarray(entry[1], dtype=np.float64)
        missing = [z for z in self.species if z not in given]
        if missing:
            raise ValueError(f"the promolecule has no coefficients for atomic numbers {missing}.")
        n_s = self.counts()[0]
        for k, z in enumerate(self.species):
            if not np.all(np.isfinite(given[z])):
                raise ValueError(f"promolecule coefficients of element {z} must be finite.")
            if np.any(given[z][n_s:] != 0.0):
                raise ValueError(f"the promolecule of element {z} has non-zero p coefficients "
                                 f"{given[z][n_s:].tolist()}; it must be spherical (p coefficients 0): a fixed "
                                 "atomic dipole in the laboratory frame would make the model depend on the "
                                 "orientation of the structure.")
            if abs(float(given[z][:n_s].sum())) > 1e-6:
                raise ValueError(f"the promolecule of element {z} carries a charge of {float(given[z][:n_s].sum()):.6g} e; "
                                 "it must be neutral (mean_coefficients(..., neutral=True)).")
            table[k] = given[z]
        return table

    def basis_table(self):
        """``(s widths (S, n_s), p widths (S, n_p), s slot mask, p slot mask)`` per species
        channel (numpy; padding slots repeat the element's widest width and are masked)."""
        n_sp = len(self.species)
        if self.basis is None:
            ws = np.tile(np.asarray(self.s_widths, dtype=np.float64).reshape(1, -1), (n_sp, 1))
            wp = np.full((n_sp, self.n_p), float(self.p_width))
            return ws, wp, np.ones(ws.shape, bool), np.ones(wp.shape, bool)
        table = {}
        for entry in self.basis:
            if len(entry) != 3:
                raise ValueError(f"basis entries are (Z, s widths, p widths), got {entry!r}.")
            z, sw, pw = int(entry[0]), tuple(float(w) for w in entry[1]), tuple(float(w) for w in entry[2])
            if not sw or not all(np.isfinite(w) and w > 0 for w in sw + pw):
                raise ValueError(f"element {z}: the basis needs at least one s width and positive widths, "
                                 f"got s {sw}, p {pw}.")
            table[z] = (sw, pw)
        missing = [z for z in self.species if z not in table]
        if missing:
            raise ValueError(f"the basis has no functions for atomic numbers {missing} (species {self.species}).")
        n_s = max(len(table[z][0]) for z in self.species)
        n_p = max(len(table[z][1]) for z in self.species)
        ws, wp = np.ones((n_sp, n_s)), np.ones((n_sp, n_p))
        ms, mp = np.zeros((n_sp, n_s), bool), np.zeros((n_sp, n_p), bool)
        for k, z in enumerate(self.species):
            sw, pw = table[z]
            ws[k] = list(sw) + [sw[-1]] * (n_s - len(sw))
            ms[k, :len(sw)] = True
            if n_p:
                wp[k] = list(pw) + [pw[-1] if pw else 1.0] * (n_p - len(pw))
                mp[k, :len(pw)] = True
        return ws, wp, ms, mp

    def counts(self) -> tuple:
        """``(n_s, n_p)``: s and p functions per atom (padded to the largest element)."""
        ws, wp, _, _ = self.basis_table()
        return ws.shape[1], wp.shape[1]

    def n_basis(self) -> int:
        n_s, n_p = self.counts()
        return n_s + 3 * n_p

    def width_names(self) -> tuple:
        if not self.learn_widths:
            return ()
        n_s, n_p = self.counts()
        return tuple(f"s_width{k}" for k in range(n_s)) + tuple(f"p_width{k}" for k in range(n_p))

    def initial_widths(self) -> tuple:
        ws, wp, ms, mp = self.basis_table()
        return tuple(float(w) for w in np.concatenate([ws[ms], wp[mp]]))

    def _widths(self, dtype):
        """Per-species widths (S, n_s), (S, n_p): learned (softplus) or fixed."""
        ws0, wp0, _, _ = self.basis_table()
        if not self.learn_widths:
            return jnp.asarray(ws0, dtype), jnp.asarray(wp0, dtype)
        if self.basis is None:
            n_sp = len(self.species)
            ws = jnp.stack([species_parameter(self, f"s_width{k}", n_sp, float(w), dtype)
                            for k, w in enumerate(self.s_widths)], axis=1)
            wp = (jnp.stack([species_parameter(self, f"p_width{k}", n_sp, float(self.p_width), dtype)
                             for k in range(self.n_p)], axis=1) if self.n_p else jnp.zeros((n_sp, 0), dtype))
            return ws, wp

        def learned(name, init):
            raw0 = np.log(np.expm1(init))
            return jax.nn.softplus(self.param(name, lambda k, sh: jnp.asarray(raw0, dtype), init.shape))

        ws = jnp.stack([learned(f"s_width{k}", ws0[:, k]) for k in range(ws0.shape[1])], axis=1)
        wp = (jnp.stack([learned(f"p_width{k}", wp0[:, k]) for k in range(wp0.shape[1])], axis=1)
              if wp0.shape[1] else jnp.zeros((len(self.species), 0), dtype))
        return ws, wp

    def _linear_and_local(self, s, f, idx, dtype):
        """The solve's per-atom linear terms (N, nb) and local matrices (N, nb, nb), built so
        that the model is rotation-equivariant: s terms are invariant network outputs; each
        p triple's linear term is Σ_k w_k(f) V_k over the l = 1 neighbour-density vectors V
        (:func:`local_vectors`); the local matrix is block diagonal, an SPD s block and an SPD
        p-shell block ⊗ I₃ (no s–p coupling, isotropic in x, y, z), so ``cᵀHc`` and ``bᵀc``
        are invariant when the p coefficients turn with the structure."""
        n_sp = len(self.species)
        n_s, n_p = self.counts()
        nb = n_s + 3 * n_p
        vec = local_vectors(s, self.local, n_sp)                                      # (N, K, 3)
        k = vec.shape[1]
        ts, tp = n_s * (n_s + 1) // 2, n_p * (n_p + 1) // 2
        out = SpeciesMLP(n_sp, tuple(self.coef_hidden), n_s + n_p * k + ts + tp, self.activation, out_scale=0.1,
                         name="coef_net")(f, s.species)
        n = out.shape[0]
        w_p = out[:, n_s:n_s + n_p * k].reshape(n, n_p, k)
        linear = jnp.concatenate([out[:, :n_s], jnp.einsum("npk,nkc->npc", w_p, vec).reshape(n, 3 * n_p)], axis=1)

        def spd(name, m, entries):
            tri = np.tril_indices(m)
            lower = jnp.zeros((n, m, m), dtype).at[:, tri[0], tri[1]].set(entries)
            a0 = math.sqrt(self.hardness)
            base = self.param(name, lambda key, sh: jnp.broadcast_to(a0 * jnp.eye(m, dtype=dtype), sh),
                              (n_sp, m, m))[idx]
            return base @ jnp.swapaxes(base, 1, 2) + lower @ jnp.swapaxes(lower, 1, 2) + 1e-3 * jnp.eye(m, dtype=dtype)

        h_s = spd("local_base_s", n_s, out[:, n_s + n_p * k:n_s + n_p * k + ts])
        local = jnp.zeros((n, nb, nb), dtype).at[:, :n_s, :n_s].set(h_s)
        if n_p:
            h_p = spd("local_base_p", n_p, out[:, n_s + n_p * k + ts:])
            local = local.at[:, n_s:, n_s:].set(jnp.einsum("nab,cd->nacbd", h_p, jnp.eye(3, dtype=dtype))
                                                 .reshape(n, 3 * n_p, 3 * n_p))
        local = jnp.where(s.atom_mask[:, None, None], local, jnp.eye(nb, dtype=dtype))
        return linear, local

    @nn.compact
    def __call__(self, s):
        s = _open_safe(s)
        dtype = s.positions.dtype
        if self.basis is None and len(self.s_widths) != self.n_s:
            raise ValueError(f"s_widths needs {self.n_s} entries, got {len(self.s_widths)}.")
        _, _, slot_s, slot_p = self.basis_table()
        f = self.local_features(s)
        e = self.short_range(s, f)
        idx = jnp.clip(s.species, 0)
        linear, local = self._linear_and_local(s, f, idx, dtype)
        ws, wp = self._widths(dtype)                                                   # (S, n_s), (S, n_p)
        sigma_s = jnp.where(s.atom_mask[:, None], ws[idx], 1.0)
        sigma_p = jnp.where(s.atom_mask[:, None], wp[idx], 1.0)
        slots = np.concatenate([slot_s, np.repeat(slot_p, 3, axis=1)], axis=1)         # (S, nb) static
        active = s.atom_mask[:, None] & jnp.asarray(slots)[idx]
        options = self.solver_options(s)
        fragments = jnp.where(s.atom_mask, s.fragments, 0)
        fragment_charges = s.fragment_charges
        e_fix = 0.0
        if self.promolecule is not None:     # c = c_fix + x; a neutral c_fix only enters the field energy
            c_fix = jnp.where(active, jnp.asarray(self.promolecule_table(), dtype)[idx], 0.0)
            n_ns = slot_s.shape[1]
            if s.field is not None:          # −(Σ q R + Σ μ)·F of the fixed density
                field = jnp.asarray(s.field, dtype)
                e_fix = -jnp.sum(c_fix[:, :n_ns] * (s.positions @ field)[:, None]) \
                    - jnp.sum(c_fix[:, n_ns:].reshape(c_fix.shape[0], -1, 3) @ field)
        res = density_solve(s.positions, sigma_s, sigma_p, jnp.where(active, linear, 0.0), local,
                            fragments=fragments, fragment_charges=fragment_charges, active=active, field=s.field,
                            **options)
        x = jnp.where(active, res.coefficients, 0.0)
        coefficients = x
        q, mu = res.charges, res.dipoles
        if self.promolecule is not None:
            coefficients = coefficients + c_fix
            q = jnp.sum(coefficients[:, :n_ns], axis=1)
            mu = jnp.sum(coefficients[:, n_ns:].reshape(q.shape[0], -1, 3), axis=1)
        q = jnp.where(s.atom_mask, q, 0.0)
        mu = jnp.where(s.atom_mask[:, None], mu, 0.0)
        e_coul = res.energy + e_fix
        if s.cell is not None:   # the real-space blocks switched off smoothly at the cutoff
            e_coul = e_coul + multipole_switch_correction(s, x, sigma_s, sigma_p, self.coulomb)
        return {"energy": jnp.sum(e) + e_coul, "atom_energies": e, "charges": q,
                "dipole": self.dipole(s, q, mu), "coefficients": coefficients,
                "basis_widths": jnp.concatenate([sigma_s, sigma_p], axis=1)}


MODELS = {"local": LocalModel, "lode": LodeModel, "latent": LatentChargeModel, "qeq": QeqModel,
          "density": DensityModel}

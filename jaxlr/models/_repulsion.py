"""A fixed core-repulsion prior: the Ziegler–Biersack–Littmark (ZBL) screened nuclear repulsion.

A model trained on near-equilibrium structures has no data at short interatomic distance
and may extrapolate to an attractive hole there; molecular dynamics then collapses
(atoms fuse, the temperature runs away).  The usual remedy is a fixed physical pair
repulsion that the network corrects: the ZBL "universal" potential (Ziegler, Biersack &
Littmark, *The Stopping and Range of Ions in Solids*, 1985)

    E_ij = k_e Z_i Z_j / r · φ(r/a),   a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
    φ(x) = 0.18175 e^{−3.19980x} + 0.50986 e^{−0.94229x} + 0.28022 e^{−0.40290x}
           + 0.02817 e^{−0.20162x},

with k_e = e²/4πε₀ = :data:`jaxlr.units.KE` eV·Å, the bare Coulomb repulsion of the nuclei
screened by the electrons (φ(0) = 1, φ → 0 at large x; 0.46850 Å = 0.8854 a₀).

Switch.  The pair energy is multiplied by a polynomial envelope of t = r/r_s,

    u(t) = 1 − 28 t⁶ + 48 t⁷ − 21 t⁸  (t < 1),   u = 0  (t ≥ 1),

whose derivative ``−168 t⁵ (1 − t)²`` vanishes twice at t = 1 (so the energy, the forces and
their first derivatives are continuous at r_s) and to fifth order at t = 0 (so ZBL is left
almost untouched at short range: u(0.5) = 0.86).  The default switch radius of a pair is
the sum of the covalent radii of the two elements (Cordero et al., Dalton Trans. 2008,
2832; :data:`COVALENT_RADII`), e.g. 0.97 Å for O–H and 1.32 Å for O–O: the prior acts only
where two atoms are closer than a covalent bond, i.e. never in near-equilibrium training
data, and the network does not have to cancel it there.  A fixed radius (the same for every
pair, e.g. the descriptor cutoff) can be chosen instead.  The radius is capped at the local
descriptor cutoff, so every pair the prior needs is in the neighbour list the descriptors
already read (no new cutoff, no new capacity).

Each unordered pair counts once: the per-atom energies are ``½ Σ_j u E_ij`` over the full
neighbour list (both (i, j) and (j, i) are present); periodic images are pairs like any
other, and a zero-shift self pair is ignored.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..system._neighbors import pair_displacements
from ..units import KE

__all__ = ["ZBL_COEFFICIENTS", "ZBL_EXPONENTS", "ZBL_LENGTH", "COVALENT_RADII", "zbl_pair_energy",
           "repulsion_radii", "repulsion_energies"]

#: coefficients of the ZBL screening function φ (they sum to 1.00000)
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
#: exponents of the ZBL screening function φ(x) = Σ_k c_k e^{−d_k x}
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)
#: ZBL screening length numerator (Å): a = ZBL_LENGTH / (Z_i^0.23 + Z_j^0.23), 0.8854 a₀
ZBL_LENGTH = 0.46850
#: single-bond covalent radii (Å) of Z = 1 … 96 (Cordero et al., Dalton Trans. 2008, 2832;
#: carbon sp³, manganese, iron and cobalt low spin); index 0 is unused
COVALENT_RADII = (
    0.0,
    0.31, 0.28,                                                                    # H He
    1.28, 0.96, 0.84, 0.76, 0.71, 0.66, 0.57, 0.58,                                # Li … Ne
    1.66, 1.41, 1.21, 1.11, 1.07, 1.05, 1.02, 1.06,                                # Na … Ar
    2.03, 1.76, 1.70, 1.60, 1.53, 1.39, 1.39, 1.32, 1.26, 1.24, 1.32, 1.22,        # K … Zn
    1.22, 1.20, 1.19, 1.20, 1.20, 1.16,                                            # Ga … Kr
    2.20, 1.95, 1.90, 1.75, 1.64, 1.54, 1.47, 1.46, 1.42, 1.39, 1.45, 1.44,        # Rb … Cd
    1.42, 1.39, 1.39, 1.38, 1.39, 1.40,                                            # In … Xe
    2.44, 2.15, 2.07, 2.04, 2.03, 2.01, 1.99, 1.98, 1.98, 1.96, 1.94, 1.92, 1.92,  # Cs … Ho
    1.89, 1.90, 1.87, 1.87, 1.75, 1.70, 1.62, 1.51, 1.44, 1.41, 1.36, 1.36, 1.32,  # Er … Hg
    1.45, 1.46, 1.48, 1.40, 1.50, 1.50,                                            # Tl … Rn
    2.60, 2.21, 2.15, 2.06, 2.00, 1.96, 1.90, 1.87, 1.80, 1.69,                    # Fr … Cm
)


def zbl_pair_energy(r, z_i, z_j):
    """ZBL repulsion of two nuclei at distance ``r`` (eV), unswitched, elementwise.

    ``E = k_e Z_i Z_j / r · φ(r / a)`` with the universal screening function φ and length
    a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23) (module docstring); k_e = :data:`jaxlr.units.KE`.

    Args:
      r: distance(s) in Å (> 0), any shape; the result has its dtype (float arrays).
      z_i, z_j: atomic numbers (ints or arrays broadcastable with ``r``).

    Returns:
      energy in eV, the broadcast shape of the arguments.

    Example:
      >>> from jaxlr.models import zbl_pair_energy
      >>> round(float(zbl_pair_energy(1.0, 8, 8)), 3)      # two oxygen nuclei 1 Å apart
      23.294
    """
    r = jnp.asarray(r)
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(jnp.result_type(float))
    z_i = jnp.asarray(z_i).astype(r.dtype)
    z_j = jnp.asarray(z_j).astype(r.dtype)
    a = ZBL_LENGTH / (z_i ** 0.23 + z_j ** 0.23)
    x = r / a
    phi = sum(c * jnp.exp(-d * x) for c, d in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
    return KE * z_i * z_j / r * phi


def repulsion_radii(atomic_numbers, cutoff: float, radius: float | None = None) -> np.ndarray:
    """Switch radii r_s (Å) of every pair of species channels (host, numpy).

    Args:
      atomic_numbers: the model's species (atomic numbers), length S.
      cutoff: the local descriptor cutoff (Å); every radius is capped at it.
      radius: a fixed switch radius (Å) for all pairs, 0 < radius ≤ cutoff; None (default)
        takes the sum of the two covalent radii (:data:`COVALENT_RADII`, Z ≤ 96).

    Returns:
      (S, S) float64 array, symmetric.

    Example:
      >>> from jaxlr.models import repulsion_radii
      >>> repulsion_radii((1, 8), cutoff=4.0).round(2).tolist()
      [[0.62, 0.97], [0.97, 1.32]]
    """
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    cutoff = float(cutoff)
    if not (np.isfinite(cutoff) and cutoff > 0):
        raise ValueError(f"the local cutoff must be a positive number of Å, got {cutoff}.")
    if radius is not None:
        radius = float(radius)
        if not (np.isfinite(radius) and 0.0 < radius <= cutoff):
            raise ValueError(f"repulsion_cutoff must be in (0, {cutoff}] Å (the local descriptor cutoff, so that "
                             f"the pairs are in the neighbour list), got {radius}; or None for the sum of the "
                             "covalent radii.")
        return np.full((z.size, z.size), radius)
    bad = [int(v) for v in z if not 1 <= v < len(COVALENT_RADII)]
    if bad:
        raise ValueError(f"no covalent radius for atomic number(s) {bad} (tabulated for 1 … "
                         f"{len(COVALENT_RADII) - 1}); pass a fixed repulsion_cutoff instead.")
    rc = np.asarray(COVALENT_RADII)[z]
    return np.minimum(rc[:, None] + rc[None, :], cutoff)


def repulsion_energies(positions, species_index, neighbors, atomic_numbers, *, cutoff: float,
                       radius: float | None = None, cell=None):
    """Per-atom switched ZBL energies ``½ Σ_j u(r_ij / r_s) E_ZBL(r_ij)`` (eV) of one structure.

    Jittable in the arrays; the species and radii are static.  Padding atoms and masked
    or out-of-range pairs contribute exactly zero, with zero (never NaN) gradients.

    Args:
      positions: (N, 3) Å.  species_index: (N,) int channel in [0, S), −1 for padding.
      neighbors: :class:`jaxlr.Neighbors` full list with a cutoff ≥ the switch radii (the
        model's list; the radii never exceed ``cutoff``).
      atomic_numbers: the species channels' atomic numbers (length S, static).
      cutoff: local descriptor cutoff (Å), the cap of the radii.  radius: fixed switch
        radius (Å) or None for covalent-radius sums (:func:`repulsion_radii`).
      cell: (3, 3) Å rows are lattice vectors, or None (open boundary).

    Returns:
      (N,) energies in the dtype of ``positions``; their sum is the total prior energy.

    Example:
      >>> import numpy as np, jaxlr
      >>> from jaxlr.models import repulsion_energies
      >>> pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.8]])
      >>> nl = jaxlr.neighbor_list(pos, 4.0)
      >>> e = repulsion_energies(pos, np.array([1, 0]), nl, (1, 8), cutoff=4.0)    # O at 0, H at 0.8 Å
      >>> bool(e[0] == e[1]), round(float(e.sum()), 4)
      (True, 1.4273)
    """
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.floating):
        positions = positions.astype(jnp.result_type(float))
    dtype = positions.dtype
    table = repulsion_radii(atomic_numbers, cutoff, radius)
    z_table = jnp.asarray(np.asarray(atomic_numbers, dtype=np.float64), dtype)
    n = positions.shape[0]
    species_index = jnp.asarray(species_index, jnp.int32)
    if neighbors.idx.shape[0] != n:
        raise ValueError(f"the neighbour list has {neighbors.idx.shape[0]} rows for {n} atoms.")
    if neighbors.shifts is not None and cell is None:
        raise ValueError("the neighbour list carries periodic shifts but cell=None; pass the cell it was built with.")
    valid = species_index >= 0
    rows = jnp.arange(n)
    idx = neighbors.idx
    si = jnp.clip(species_index, 0)
    sj = si[idx]
    self_pair = idx == rows[:, None]
    if neighbors.shifts is not None:
        self_pair = self_pair & jnp.all(neighbors.shifts == 0, axis=-1)
    mask = neighbors.mask & valid[:, None] & valid[idx] & ~self_pair
    d, _ = pair_displacements(positions, None if cell is None else jnp.asarray(cell, dtype), rows, idx,
                              neighbors.shifts)
    r2 = d[0] * d[0] + d[1] * d[1] + d[2] * d[2]                                     # (N, M)
    r_s = jnp.asarray(table, dtype)[si[:, None], sj]
    inside = mask & (r2 < r_s * r_s) & (r2 > 0.0)
    # double where: pairs outside get the stand-in distance r_s (u = 0 there), never r = 0
    r = jnp.sqrt(jnp.where(inside, r2, r_s * r_s))
    t = r / r_s
    t6 = t ** 6
    envelope = 1.0 - 28.0 * t6 + 48.0 * t6 * t - 21.0 * t6 * t * t
    pair = zbl_pair_energy(r, z_table[si][:, None], z_table[sj])
    return 0.5 * jnp.sum(jnp.where(inside, envelope * pair, 0.0), axis=1)

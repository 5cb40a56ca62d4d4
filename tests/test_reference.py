"""Checks of the independent numpy references (tests/reference.py and
tests/crystals.py) against exact results, literature values and finite
differences.  These do not touch ``jaxlr``; they establish that the yardstick
itself is right.  Runtime: a few seconds.
"""

import math

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.special import erf

try:  # tests/ is a package
    from . import crystals
    from . import reference as ref
except ImportError:  # plain module: make tests/ importable (any import mode)
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import crystals
    import reference as ref

KE = ref.KE
CASES = crystals.all_cases()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def random_system(seed, n=5, gaussian=False, neutral=True, skew=0.8):
    """A random triclinic cell with n random charges (optionally Gaussian)."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(4.0, 6.0, 3)) + rng.uniform(-skew, skew, (3, 3))
    positions = rng.uniform(-0.2, 1.2, (n, 3)) @ cell  # some atoms outside the cell
    charges = rng.uniform(-1.5, 1.5, n)
    if neutral:
        charges -= charges.mean()
    sigma = rng.uniform(0.3, 1.0, n) if gaussian else None
    return positions, charges, cell, sigma


def strained(positions, cell, eps):
    """Apply the homogeneous strain (1 + eps) to positions and cell rows."""
    deform = np.eye(3) + eps
    return positions @ deform.T, cell @ deform.T


def fd_stress(energy_fn, positions, cell, h=1e-5):
    """(1/V) dE/d(eps) by central differences over symmetric strains."""
    volume = abs(np.linalg.det(cell))
    stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * h
            eps[b, a] += 0.5 * h  # diagonal: h, off-diagonal: h/2 each
            e_plus = energy_fn(*strained(positions, cell, eps))
            e_minus = energy_fn(*strained(positions, cell, -eps))
            stress[a, b] = stress[b, a] = (e_plus - e_minus) / (2 * h) / volume
    return stress


def fd_forces(energy_fn, positions, h=1e-5):
    """-dE/dR by central differences."""
    forces = np.zeros_like(positions)
    for i in range(len(positions)):
        for a in range(3):
            dp = np.zeros_like(positions)
            dp[i, a] = h
            forces[i, a] = -(energy_fn(positions + dp) - energy_fn(positions - dp)) / (2 * h)
    return forces


def fd_potentials(energy_fn, charges, h=1e-5):
    """dE/dq by central differences."""
    phi = np.zeros_like(charges)
    for i in range(len(charges)):
        dq = np.zeros_like(charges)
        dq[i] = h
        phi[i] = (energy_fn(charges + dq) - energy_fn(charges - dq)) / (2 * h)
    return phi


def min_image_distance(crystal, i, j):
    """Shortest distance between atom i and any periodic image of atom j."""
    shifts = np.array(np.meshgrid(*[np.arange(-2, 3)] * 3, indexing="ij")).reshape(3, -1).T
    d = crystal.positions[j] - crystal.positions[i] + shifts @ crystal.cell
    d = np.linalg.norm(d, axis=1)
    return d[d > 1e-9].min()


# --------------------------------------------------------------------------
# Madelung constants and crystal cases
# --------------------------------------------------------------------------
@pytest.mark.parametrize("case_id, crystal", CASES, ids=[c[0] for c in CASES])
def test_madelung_energy(case_id, crystal):
    """Every crystal variant reproduces its Madelung energy to ~1e-13."""
    energy, phi, forces, stress = ref.ewald_energy(crystal.positions, crystal.charges, crystal.cell)
    assert crystal.energy == pytest.approx(ref.madelung_energy(crystal), rel=1e-15)
    assert energy == pytest.approx(crystal.energy, rel=1e-12, abs=0)
    assert ref.madelung_constant(crystal, energy) == pytest.approx(crystal.madelung, rel=1e-12)
    # consistency of the cell description
    volume = abs(np.linalg.det(crystal.cell))
    assert np.sum(crystal.charges) == pytest.approx(0.0, abs=1e-12)
    assert 0.5 * np.dot(crystal.charges, phi) == pytest.approx(energy, rel=1e-12)
    # cubic structures: forces vanish by symmetry.  Ideal wurtzite: u = 3/8 is
    # not the electrostatic equilibrium, all atoms feel the same |F| along c.
    fnorm = np.linalg.norm(forces, axis=1)
    if case_id.startswith("wurtzite"):
        assert np.ptp(fnorm) < 1e-11 * abs(energy)
        assert np.abs(forces.sum(axis=0)).max() < 1e-11 * abs(energy)
    else:
        assert fnorm.max() < 1e-11 * abs(energy)
    # pure Coulomb energy ~ 1/length  =>  tr(stress) = -E/V
    assert np.trace(stress) == pytest.approx(-energy / volume, rel=1e-11)


@pytest.mark.parametrize("case_id, crystal", CASES, ids=[c[0] for c in CASES])
def test_crystal_geometry(case_id, crystal):
    """nn_distance is the true shortest cation-anion distance, and the number
    of formula units matches the cell content."""
    cations = np.flatnonzero(crystal.charges > 0)
    anions = np.flatnonzero(crystal.charges < 0)
    d = min(min_image_distance(crystal, i, j) for i in cations[:2] for j in anions)
    assert d == pytest.approx(crystal.nn_distance, rel=1e-12)
    z_plus = crystal.charges.max()
    assert len(cations) == crystal.n_formula_units
    assert np.sum(crystal.charges[cations]) == pytest.approx(crystal.n_formula_units * z_plus)


def test_literature_digits():
    """The 13+ digit constants agree with every quoted literature digit, and
    the primitive cells reproduce them (our own Ewald) to > 12 digits."""
    for name, lit in crystals.MADELUNG_LITERATURE.items():
        decimals = len(repr(lit).split(".")[1])
        # quoted values are rounded or (zinc blende) truncated: allow 1 unit
        assert abs(crystals.MADELUNG[name] - lit) <= 10.0**-decimals, name
        c = crystals.structure(name, "primitive" if name != "cscl" else "conventional")
        energy = ref.ewald_energy(c.positions, c.charges, c.cell)[0]
        assert ref.madelung_constant(c, energy) == pytest.approx(crystals.MADELUNG[name], rel=1e-13)
    # alternative fluorite normalisations quoted in the literature
    m = crystals.MADELUNG["fluorite"]
    assert round(2 * m, 5) == 5.03878  # E = -A KE / d per CaF2 (charges absorbed)
    assert abs(2 * m * 4 / math.sqrt(3) - 11.6365) < 1e-4  # referred to a (truncated)
    # CsCl referred to the cube edge (Zucker 1975 Table 5)
    assert crystals.MADELUNG["cscl"] * 2 / math.sqrt(3) == pytest.approx(2.03536151, abs=1e-8)


def test_simple_cubic_jellium():
    """One point charge in a cubic box with neutralising background:
    E = KE q^2 xi / (2 L), xi = -2.837297479480620 (Wigner lattice constant
    of simple cubic, e.g. Nijboer & de Wette, Physica 23, 309 (1957))."""
    length, q = 3.7, 1.3
    for s in (0.7, 1.0, 1.6):
        e, phi, f, st = ref.ewald_energy([[0.1, 0.2, 0.3]], [q], length * np.eye(3),
                                         smearing=s, background=True)
        assert e == pytest.approx(KE * q**2 * -2.837297479480620 / (2 * length), rel=1e-12)
        assert phi[0] == pytest.approx(2 * e / q, rel=1e-12)
        assert np.trace(st) == pytest.approx(-e / length**3, rel=1e-12)
    with pytest.raises(ValueError):
        ref.ewald_energy([[0.0, 0.0, 0.0]], [q], length * np.eye(3))


# --------------------------------------------------------------------------
# Ewald: independence of the splitting parameter
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", ["point", "gaussian", "charged-background", "nacl-skewed-rcut>box"]
)
def test_smearing_independence(kind):
    """Energy, potentials, forces and stress do not depend on the smearing
    (3 values spanning a factor ~2.5; large smearing => rcut > cell)."""
    if kind == "nacl-skewed-rcut>box":
        c = crystals.nacl("skewed")
        positions, charges, cell, sigma = c.positions, c.charges, c.cell, None
    else:
        positions, charges, cell, sigma = random_system(
            3, gaussian=(kind == "gaussian"), neutral=(kind != "charged-background")
        )
    background = kind == "charged-background"
    s0 = ref.ewald_parameters(cell, sigma)[0]
    results = [
        ref.ewald_energy(positions, charges, cell, sigma, smearing=f * s0, background=background)
        for f in (0.6, 1.0, 1.5)
    ]
    e0, phi0, f0, st0 = results[0]
    fscale = max(np.abs(f0).max(), 1e-3 * abs(e0))
    for e, phi, f, st in results[1:]:
        assert e == pytest.approx(e0, rel=1e-12)
        assert np.allclose(phi, phi0, rtol=0, atol=1e-12 * np.abs(phi0).max())
        assert np.allclose(f, f0, rtol=0, atol=1e-11 * fscale)
        assert np.allclose(st, st0, rtol=0, atol=1e-12 * np.abs(st0).max())


def test_default_convergence():
    """Defaults agree with a run with much tighter cut-offs to ~1e-14."""
    positions, charges, cell, sigma = random_system(11, gaussian=True)
    s, rcut, kcut = ref.ewald_parameters(cell, sigma)
    e_def = ref.ewald_energy(positions, charges, cell, sigma)[0]
    e_big = ref.ewald_energy(positions, charges, cell, sigma, smearing=s,
                             rcut=1.4 * rcut, kcut=1.4 * kcut)[0]
    assert e_def == pytest.approx(e_big, rel=1e-13)
    # and too small cut-offs are visibly wrong (the test can detect truncation)
    e_small = ref.ewald_energy(positions, charges, cell, sigma, smearing=s,
                               rcut=0.4 * rcut, kcut=0.4 * kcut)[0]
    assert abs(e_small - e_def) > 1e-6 * abs(e_def)


def test_invariances():
    """Rotation, lattice translation of single atoms, cell re-choice."""
    positions, charges, cell, sigma = random_system(5, gaussian=True)
    e, phi, f, st = ref.ewald_energy(positions, charges, cell, sigma)
    rot = crystals.random_rotation(7)
    e2, phi2, f2, st2 = ref.ewald_energy(positions @ rot.T, charges, cell @ rot.T, sigma)
    assert e2 == pytest.approx(e, rel=1e-12)
    assert np.allclose(phi2, phi, atol=1e-12 * np.abs(phi).max(), rtol=0)
    assert np.allclose(f2, f @ rot.T, atol=1e-11 * np.abs(f).max(), rtol=0)
    assert np.allclose(st2, rot @ st @ rot.T, atol=1e-12 * np.abs(st).max(), rtol=0)
    # move atoms by lattice vectors, and use a skewed equivalent cell
    moved = positions + np.array([[1, 0, -2], [0, 3, 0], [-1, -1, 1], [0, 0, 0], [2, 1, 0]]) @ cell
    new_cell = crystals.SKEW @ cell
    e3, phi3, f3, st3 = ref.ewald_energy(moved, charges, new_cell, sigma)
    assert e3 == pytest.approx(e, rel=1e-12)
    assert np.allclose(f3, f, atol=1e-11 * np.abs(f).max(), rtol=0)
    assert np.allclose(st3, st, atol=1e-12 * np.abs(st).max(), rtol=0)


# --------------------------------------------------------------------------
# Ewald vs direct spherical image sum
# --------------------------------------------------------------------------
@pytest.mark.parametrize("gaussian", [False, True])
def test_image_sum_approaches_ewald(gaussian):
    """Tapered spherical cluster sum -> Ewald (documented rate ~ n^-3)."""
    positions, charges, cell, sigma = random_system(1, n=4, gaussian=gaussian, skew=0.6)
    e_ewald = ref.ewald_energy(positions, charges, cell, sigma)[0]
    err = {
        n: abs(ref.image_sum_energy(positions, charges, cell, n, sigma) - e_ewald) / abs(e_ewald)
        for n in (4, 16)
    }
    assert err[16] < 2e-5
    assert err[16] < 0.05 * err[4]
    # the plain sharp-edged sphere converges too, but only to ~1e-3
    sharp = ref.image_sum_energy(positions, charges, cell, 16, sigma, taper=0.0)
    assert sharp == pytest.approx(e_ewald, rel=5e-3)


# --------------------------------------------------------------------------
# derivatives: forces, potentials, stress vs finite differences
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["point", "gaussian", "charged-background"])
def test_ewald_derivatives(kind):
    """Analytic forces, potentials and stress = finite differences."""
    gaussian = kind == "gaussian"
    positions, charges, cell, sigma = random_system(21, n=4, gaussian=gaussian,
                                                    neutral=kind != "charged-background")
    s = ref.ewald_parameters(cell, sigma)[0]  # keep s fixed under strain

    def energy(pos=positions, q=charges, c=cell):
        return ref.ewald_energy(pos, q, c, sigma, smearing=s, background=True)[0]

    # the finite differences in q need the background (they change the net charge), so
    # the analytic potentials are taken with it too: for Gaussian charges ∂E_bg/∂q_k is
    # 2π KE Σ_i q_i σ_i²/V even in a neutral cell
    e, phi, forces, stress = ref.ewald_energy(positions, charges, cell, sigma,
                                              smearing=s, background=True)
    # central differences with h = 1e-5 agree to ~1e-11 * scale (measured)
    scale = abs(e) + np.abs(charges) @ np.abs(phi)
    assert np.allclose(forces, fd_forces(lambda p: energy(pos=p), positions),
                       rtol=0, atol=1e-9 * scale)
    assert np.allclose(phi, fd_potentials(lambda q: energy(q=q), charges),
                       rtol=0, atol=1e-9 * scale)
    assert np.allclose(stress, fd_stress(lambda p, c: energy(pos=p, c=c), positions, cell),
                       rtol=0, atol=1e-9 * scale / abs(np.linalg.det(cell)))
    assert np.allclose(stress, stress.T, rtol=0, atol=1e-14 * scale)
    assert np.allclose(forces.sum(axis=0), 0.0, atol=1e-11 * scale)
    # every term (incl. Gaussian self-energies) is quadratic in q => E = 1/2 q.phi
    assert 0.5 * charges @ phi == pytest.approx(e, rel=1e-12)


def test_crystal_stress_finite_strain():
    """Stress of a strained, skewed wurtzite cell (non-zero forces) vs FD."""
    c = crystals.wurtzite("combo")
    eps = np.array([[0.02, 0.01, 0.0], [0.01, -0.01, 0.005], [0.0, 0.005, 0.03]])
    positions, cell = strained(c.positions, c.cell, eps)
    positions = positions + np.random.default_rng(0).normal(0, 0.05, positions.shape)
    s = ref.ewald_parameters(cell)[0]
    e, phi, forces, stress = ref.ewald_energy(positions, c.charges, cell, smearing=s)
    fd = fd_stress(lambda p, cc: ref.ewald_energy(p, c.charges, cc, smearing=s)[0], positions, cell)
    assert np.abs(stress - fd).max() < 1e-8 * abs(e) / abs(np.linalg.det(cell))
    assert np.trace(stress) == pytest.approx(-e / abs(np.linalg.det(cell)), rel=1e-11)
    assert np.abs(forces).max() > 0.1  # the check is not trivial


@pytest.mark.parametrize("kind", ["point", "gaussian", "mixed"])
def test_direct_derivatives(kind):
    """Open-boundary forces and potentials = finite differences ("mixed":
    sigma = 0 entries are point charges among Gaussians)."""
    rng = np.random.default_rng(4)
    positions = rng.uniform(0, 4, (6, 3))
    charges = rng.uniform(-1, 1, 6)
    sigma = None if kind == "point" else rng.uniform(0.3, 1.2, 6)
    if kind == "mixed":
        sigma[[0, 3]] = 0.0
    e, phi, forces = ref.direct_energy(positions, charges, sigma)
    scale = abs(e) + np.abs(charges) @ np.abs(phi)
    fd_f = fd_forces(lambda p: ref.direct_energy(p, charges, sigma)[0], positions)
    fd_p = fd_potentials(lambda q: ref.direct_energy(positions, q, sigma)[0], charges)
    assert np.allclose(forces, fd_f, rtol=0, atol=1e-9 * scale)
    assert np.allclose(phi, fd_p, rtol=0, atol=1e-9 * scale)
    assert 0.5 * charges @ phi == pytest.approx(e, rel=1e-13)


# --------------------------------------------------------------------------
# Gaussian charges
# --------------------------------------------------------------------------
def test_gaussian_pair_formula():
    """Two Gaussians: direct_energy = analytic pair formula + self-energies,
    and the formulas themselves follow from the charge densities."""
    q1, q2, s1, s2 = 0.7, -1.2, 0.5, 0.9
    gamma = math.hypot(s1, s2)
    for r in (0.05, 0.8, 2.0, 7.5):
        e, phi, f = ref.direct_energy([[0, 0, 0], [r, 0, 0]], [q1, q2], [s1, s2])
        pair = KE * q1 * q2 * erf(r / (math.sqrt(2) * gamma)) / r
        self_e = KE * (q1**2 / s1 + q2**2 / s2) / (2 * math.sqrt(math.pi))
        assert e == pytest.approx(pair + self_e, rel=1e-14)
        # atom 1 at the origin, atom 2 at +x: F_1,x = +dE/dr, F_2,x = -dE/dr
        a = math.sqrt(2) * gamma
        dpair = KE * q1 * q2 * (2 / math.sqrt(math.pi) * math.exp(-(r / a) ** 2) / (a * r)
                                - erf(r / a) / r**2)
        assert f[0, 0] == pytest.approx(dpair, rel=1e-12)
        assert f[1, 0] == pytest.approx(-dpair, rel=1e-12)

    # independent check of the conventions from the densities: the radial
    # potential of a Gaussian, phi(r) = (1/r) int_0^r rho 4pi t^2 dt
    # + int_r^inf rho 4pi t dt, equals q erf(r/(sqrt2 sigma))/r, and
    # 1/2 int rho phi dV = q^2/(2 sqrt(pi) sigma).
    sig, q = 0.8, 1.0

    def rho(t):
        return q * (2 * math.pi * sig**2) ** -1.5 * math.exp(-t * t / (2 * sig**2))

    for r in (0.3, 1.0, 2.5):
        inner = quad(lambda t: rho(t) * 4 * math.pi * t * t, 0, r, epsabs=1e-14)[0] / r
        outer = quad(lambda t: rho(t) * 4 * math.pi * t, r, np.inf, epsabs=1e-14)[0]
        assert inner + outer == pytest.approx(q * erf(r / (math.sqrt(2) * sig)) / r, rel=1e-10)
    self_energy = 0.5 * quad(
        lambda t: rho(t) * q * erf(t / (math.sqrt(2) * sig)) / t * 4 * math.pi * t * t, 0, np.inf,
        epsabs=1e-14,
    )[0]
    assert self_energy == pytest.approx(q**2 / (2 * math.sqrt(math.pi) * sig), rel=1e-10)


def test_gaussian_narrow_limit_is_point_charge():
    """Very narrow Gaussians (and sigma = 0 entries = point charges) give the
    point-charge Ewald energy once the Gaussian self-energies are removed."""
    c = crystals.fluorite("primitive")
    sigma = np.array([0.0, 0.01, 0.02])
    e, phi, f, st = ref.ewald_energy(c.positions, c.charges, c.cell, sigma)
    e_self = KE * np.sum(c.charges[1:] ** 2 / (2 * math.sqrt(math.pi) * sigma[1:]))
    assert e - e_self == pytest.approx(c.energy, rel=1e-12)
    e_p, _, f_p, st_p = ref.ewald_energy(c.positions, c.charges, c.cell)
    assert np.allclose(st, st_p, rtol=0, atol=1e-12 * np.abs(st_p).max())


def test_gaussian_periodic_big_box_vs_isolated():
    """A neutral Gaussian 'molecule' in a big cubic box: the tin-foil Ewald
    energy equals the isolated energy minus the dipole term
    2 pi KE |D|^2 / (3 V) up to O(L^-5) (quadrupole-quadrupole images).
    Measured remainder: 1.1e-6 eV (L=30), 3.5e-8 eV (L=60), 1.1e-9 eV (L=120)."""
    pos = np.array([[0, 0, 0], [1.1, 0.2, -0.3], [-0.4, 1.0, 0.5], [0.3, -0.6, 1.2]])
    q = np.array([0.8, -0.5, -0.6, 0.3])
    sig = np.array([0.6, 0.9, 0.7, 1.1])
    e_iso, phi_iso, f_iso = ref.direct_energy(pos, q, sig)
    dipole = q @ pos
    remainder = {}
    for length in (30.0, 60.0):
        volume = length**3
        p = pos + length / 2
        e, phi, f, st = ref.ewald_energy(p, q, length * np.eye(3), sig)
        remainder[length] = e + 2 * math.pi * KE * dipole @ dipole / (3 * volume) - e_iso
        # forces: isolated + uniform depolarising field of the dipole images
        f_corr = f_iso + 4 * math.pi * KE / (3 * volume) * np.outer(q, dipole)
        assert np.allclose(f, f_corr, rtol=0, atol=2e-5 * (30 / length) ** 5)
        # potentials: isolated - dipole field . R + a constant (mean-zero
        # potential convention of the periodic system)
        shift = phi - phi_iso + 4 * math.pi * KE / (3 * volume) * (p @ dipole)
        assert np.ptp(shift) < 1e-5 * (30 / length) ** 4
    assert abs(remainder[60.0]) < 1e-7
    assert abs(remainder[60.0]) < abs(remainder[30.0]) / 16  # ~L^-5 (ratio 32)

"""The MD driver (``jaxlr.md.run_md``) and the ``jaxlr md`` command.

Physics checks: NVE energy conservation of the Tosi–Fumi NaCl melt (velocity Verlet's
energy error is bounded and the Coulomb sum is converged to 1e-5), the Langevin mean
temperature against its target (slow), a volume that responds to the pressure in NPT, an
exact continuation from a restart file (2N steps = N + restart + N to rounding), output
files read back by ASE and numpy, and refusals of bad input before anything compiles.

Each ``run_md`` call compiles its chunk function once (a few seconds at the tests' LLVM
level 0), so the default set shares runs through module fixtures: 64 ions, float64.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("jax_md")
pytest.importorskip("ase")
import ase.io  # noqa: E402

from jaxlr.cli import main  # noqa: E402
from jaxlr.md import energy_drift, molten_nacl, run_md  # noqa: E402

KB = 8.617333262e-5        # eV/K (CODATA 2018)
N_IONS = 64
COLUMNS = ["step", "time_ps", "temperature_K", "potential_eV", "kinetic_eV", "total_eV", "conserved_eV",
           "pressure_bar", "volume_A3", "density_g_cm3"]


def _read_csv(path):
    with open(path) as fh:
        header = fh.readline().strip().split(",")
    return header, np.genfromtxt(path, delimiter=",", skip_header=1, ndmin=2)


@pytest.fixture(scope="module")
def nve(tmp_path_factory):
    """40 NVE steps of 64 molten-salt ions (1 fs, 1200 K), PME at 1e-5, chunks of 10 steps."""
    out = tmp_path_factory.mktemp("nve")
    res = run_md(model="nacl", n_ions=N_IONS, ensemble="nve", temperature=1200.0, dt=1.0, steps=40,
                 thermo_every=10, traj_every=20, accuracy=1e-5, seed=3, out=out, plots=True)
    return res


# --------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------
def test_nve_conserves_energy(nve):
    """Total energy stays within 2e-5 eV/atom of its start over 40 fs while the kinetic energy
    changes by ~100× that (the lattice start melts: potential ↔ kinetic exchange)."""
    t = nve.thermo
    total = t["total_eV"]
    assert np.all(np.isfinite(total))
    assert np.max(np.abs(total - total[0])) / N_IONS < 2e-5
    assert np.ptp(t["kinetic_eV"]) / N_IONS > 2e-3
    np.testing.assert_allclose(t["conserved_eV"], total)
    # temperature from the kinetic energy with 3N degrees of freedom, and the drawn start near 1200 K
    np.testing.assert_allclose(t["temperature_K"], 2 * t["kinetic_eV"] / (3 * N_IONS * KB), rtol=1e-9)
    assert 900.0 < t["temperature_K"][0] < 1500.0
    # density of the generated melt (NaCl at its melting point, 1.556 g/cm³)
    np.testing.assert_allclose(t["density_g_cm3"], 1.556, rtol=1e-9)


def test_restart_continues_exactly(nve, tmp_path):
    """N steps, then N more from restart.npz through the command line, equal 2N steps in one run
    (positions and momenta to rounding; same PME mesh and cutoffs, same list handling)."""
    log = io.StringIO()
    first = run_md(model="nacl", n_ions=N_IONS, ensemble="nve", temperature=1200.0, dt=1.0, steps=20,
                   thermo_every=10, traj_every=20, accuracy=1e-5, seed=3, out=tmp_path, plots=False,
                   progress=True, stream=log)
    assert first.step == 20
    # the closing line reports the conserved-energy drift of the rows written
    d = energy_drift(first.thermo["time_ps"], first.thermo["conserved_eV"], N_IONS)
    assert f"conserved-energy drift {d.slope:+.2e} ± {d.stderr:.1e} meV/atom/ps" in log.getvalue()
    code = main(["md", "--model", "nacl", "--restart", str(tmp_path / "restart.npz"), "--ensemble", "nve",
                 "--dt", "1", "--steps", "20", "--thermo-every", "10", "--traj-every", "20", "--out", str(tmp_path),
                 "--no-plots", "--quiet", "--accuracy", "1e-5"])
    assert code == 0
    end = ase.io.read(tmp_path / "trajectory.extxyz", index=-1)
    ref = nve.atoms
    assert end.info["step"] == 40
    np.testing.assert_allclose(end.positions, ref.positions, atol=1e-7)      # extxyz keeps 8 decimals
    with np.load(tmp_path / "restart.npz") as f:
        np.testing.assert_allclose(f["momenta"], ref.get_momenta(), rtol=0, atol=1e-9)
    header, rows = _read_csv(tmp_path / "thermo.csv")
    assert rows[:, 0].tolist() == [0, 10, 20, 30, 40]          # appended after the restart
    np.testing.assert_allclose(rows[:, header.index("total_eV")], nve.thermo["total_eV"], rtol=0, atol=1e-9)


def test_npt_volume_responds_to_pressure(tmp_path):
    """The lattice start is far from 1 bar (tens of kbar): under the barostat (τ_P = 200 fs) the
    volume moves the way the pressure pushes it, the box is written to the trajectory, and the
    density column follows the volume."""
    res = run_md(model="nacl", n_ions=128, ensemble="npt", temperature=1200.0, pressure=1.0, dt=2.0, steps=40,
                 thermo_every=10, traj_every=40, accuracy=1e-4, tau_p=200.0, seed=1, out=tmp_path, plots=True)
    t = res.thermo
    assert abs(t["pressure_bar"][0]) > 5e3
    change = t["volume_A3"][-1] / t["volume_A3"][0] - 1.0
    assert abs(change) > 1e-3 and np.sign(change) == np.sign(t["pressure_bar"][0])
    np.testing.assert_allclose(t["density_g_cm3"] * t["volume_A3"], t["density_g_cm3"][0] * t["volume_A3"][0],
                               rtol=1e-12)
    frames = ase.io.read(tmp_path / "trajectory.extxyz", index=":")
    np.testing.assert_allclose([abs(a.cell.volume) for a in frames], t["volume_A3"][[0, -1]], rtol=1e-6)
    assert np.all(np.isfinite(t["conserved_eV"]))
    for name in ("energy.png", "temperature.png", "pressure_volume.png"):
        assert (tmp_path / name).stat().st_size > 1000


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def test_output_files(nve):
    out = nve.out
    header, rows = _read_csv(out / "thermo.csv")
    assert header == COLUMNS
    assert rows.shape == (5, len(COLUMNS))
    assert rows[:, 0].tolist() == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(rows[:, 1], rows[:, 0] * 1e-3)            # 1 fs steps, time in ps
    frames = ase.io.read(out / "trajectory.extxyz", index=":")
    assert [a.info["step"] for a in frames] == [0, 20, 40]
    last = frames[-1]
    np.testing.assert_allclose(last.get_velocities(), nve.atoms.get_velocities(), rtol=1e-6, atol=1e-9)
    q = last.get_charges()
    np.testing.assert_array_equal(q, np.where(last.numbers == 11, 1.0, -1.0))
    assert np.all(last.pbc) and abs(last.cell.volume - rows[-1, COLUMNS.index("volume_A3")]) < 1e-6
    assert last.get_potential_energy() == pytest.approx(rows[-1, COLUMNS.index("potential_eV")], abs=1e-9)
    # temperature from the written velocities (ASE units) agrees with the thermo column
    ke = 0.5 * np.sum(last.get_masses()[:, None] * last.get_velocities() ** 2)
    assert 2 * ke / (3 * len(last) * KB) == pytest.approx(rows[-1, COLUMNS.index("temperature_K")], rel=1e-6)
    with np.load(out / "restart.npz") as f:
        assert int(f["numbers"].size) == N_IONS and f["momenta"].shape == (N_IONS, 3)
    for name in ("energy.png", "temperature.png", "pressure_volume.png"):
        assert (out / name).stat().st_size > 1000


def test_help_documents_units(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["md", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for needle in ("--temperature", "fs", "bar", "thermo.csv", "trajectory.extxyz", "restart.npz", "nacl-qeq"):
        assert needle in text


# --------------------------------------------------------------------------------------
# refusals (nothing compiles: all raised during the host set-up)
# --------------------------------------------------------------------------------------
BASE = dict(model="nacl", n_ions=N_IONS, temperature=1000.0, steps=10, plots=False)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-5.0), "temperature"),
    (dict(dt=0.0), "dt"),
    (dict(dt=-1.0), "dt"),
    (dict(steps=0), "steps"),
    (dict(thermo_every=0), "thermo_every"),
    (dict(traj_every=15, thermo_every=10), "multiple"),
    (dict(ensemble="nph"), "ensemble"),
    (dict(ensemble="nve", pressure=1.0), "pressure"),
    (dict(ensemble="nvt-nh", pressure=1.0), "pressure"),
    (dict(ensemble="nvt-langevin", temperature=None), "temperature"),
    (dict(ensemble="nve", temperature=None), "velocities"),
    (dict(model="no-such-model"), "neither a built-in"),
    (dict(n_ions=16), "too small"),
    (dict(cutoff=7.0), "too small"),
])
def test_bad_arguments_raise(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_md(**{**BASE, "out": tmp_path, **kwargs})


def test_bad_structures_and_models_raise(tmp_path, nve):
    atoms = molten_nacl(N_IONS)
    with pytest.raises(ValueError, match="periodic"):
        run_md(_nonperiodic(atoms), "nacl", temperature=1000.0, out=tmp_path)
    alien = atoms.copy()
    alien.numbers[:2] = 19                                   # potassium
    with pytest.raises(ValueError, match=r"K \(Z=19\)"):
        run_md(alien, "nacl", temperature=1000.0, out=tmp_path)
    before = atoms.positions.copy()
    junk = tmp_path / "not-a-checkpoint"
    junk.mkdir()
    (junk / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="checkpoint"):
        run_md(atoms, str(junk), temperature=1000.0, out=tmp_path)
    np.testing.assert_array_equal(atoms.positions, before)   # the caller's Atoms are untouched
    bigger = molten_nacl(2 * N_IONS)
    with pytest.raises(ValueError, match="another system"):
        run_md(bigger, "nacl", restart=nve.out / "restart.npz", out=tmp_path)
    with pytest.raises(ValueError, match="restart"):
        run_md(atoms, "nacl", restart=nve.out / "thermo.csv", out=tmp_path)
    code = main(["md", "--model", "nacl", "--ions", "64", "--temperature", "-1", "--out", str(tmp_path)])
    assert code == 2


def _checkpoint(folder, kind="local"):
    """A small untrained model for Na and Cl saved as a checkpoint (its cutoff 3 Å fits a 64-ion box)."""
    import jax

    from jaxlr.models import build_potential
    from jaxlr.testing import toy_batch
    from jaxlr.train import save

    hyper = dict(local=dict(cutoff=3.0, max_radial=2, max_angular=1), hidden=(4,))
    if kind == "qeq":
        hyper["chi_hidden"] = (4,)
    pot = build_potential(kind, species=(11, 17), **hyper)
    variables = pot.init(jax.random.PRNGKey(0), toy_batch(pot.species, cutoff=pot.cutoff))
    save(folder, pot, variables)
    return folder


def test_checkpoint_refusals(tmp_path):
    """A checkpoint model refuses elements it was not trained on (naming them) and a box narrower
    than twice its cutoff, before compiling."""
    ckpt = _checkpoint(tmp_path / "ckpt")
    atoms = molten_nacl(N_IONS)
    atoms.numbers[0] = 19
    with pytest.raises(ValueError, match=r"K \(Z=19\)"):
        run_md(atoms, ckpt, temperature=1000.0, out=tmp_path / "a")
    small = ase.Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=np.eye(3) * 5.6, pbc=True)
    with pytest.raises(ValueError, match="half the smallest width"):
        run_md(small, ckpt, temperature=1000.0, out=tmp_path / "b")


def test_shifted_force_short_range_against_numpy():
    """The built-ins' short range is the Tosi–Fumi pair energy shifted so that energy and force
    vanish at the cutoff: compare with a brute-force minimum-image sum in numpy (formula and
    parameters of Tosi & Fumi 1964 written out here), and −grad with finite differences."""
    import jax
    import jax.numpy as jnp
    from jax_md import space

    from jaxlr.md import TOSI_FUMI_NACL as P
    from jaxlr.md._forcefield import shifted_force_tosi_fumi

    atoms = molten_nacl(N_IONS, seed=1, jitter=0.3)
    cell = atoms.cell.array
    s = (atoms.numbers == 17).astype(int)
    rc = 5.5
    box = jnp.asarray(cell.T)
    displacement, _ = space.periodic_general(box)
    nf, energy = shifted_force_tosi_fumi(displacement, box, s, r_cutoff=rc, dr_threshold=0.5,
                                         capacity_multiplier=1.25)
    R = jnp.asarray(atoms.get_scaled_positions())
    nbrs = nf.allocate(R)
    A, sig, C, D = (np.asarray(x) for x in (P.A, P.sigma, P.C, P.D))

    def phi(r, i, j):
        return A[i, j] * np.exp((sig[i, j] - r) / P.rho) - C[i, j] / r**6 - D[i, j] / r**8

    def dphi(r, i, j):
        return -A[i, j] / P.rho * np.exp((sig[i, j] - r) / P.rho) + 6 * C[i, j] / r**7 + 8 * D[i, j] / r**9

    pos = atoms.positions
    ref = 0.0
    for a in range(len(pos)):
        d = pos - pos[a]
        d -= np.round(d @ np.linalg.inv(cell)) @ cell
        r = np.linalg.norm(d, axis=1)
        for b in np.flatnonzero((r < rc) & (np.arange(len(pos)) != a)):
            i, j = s[a], s[b]
            ref += 0.5 * (phi(r[b], i, j) - phi(rc, i, j) - (r[b] - rc) * dphi(rc, i, j))
    assert abs(float(energy(R, nbrs)) - ref) < 1e-10 * abs(ref)
    # continuity at the cutoff: a Na–Cl pair at r_c ± 1e-6 Å contributes ~0 either way
    f = jax.grad(energy)(R, nbrs)
    assert np.all(np.isfinite(np.asarray(f)))


def _nonperiodic(atoms):
    a = atoms.copy()
    a.pbc = False
    return a


# --------------------------------------------------------------------------------------
# slow: thermostats, Qeq, a collapsing NPT box
# --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_langevin_mean_temperature(tmp_path):
    """Langevin (τ_T = 50 fs) from a 300 K start heats 64 ions to the 1200 K target: the mean over
    the second half of 1.2 ps lies within 10 % of it (fluctuations of 64 ions: ±12 % per sample)."""
    res = run_md(model="nacl", n_ions=N_IONS, ensemble="nvt-langevin", temperature=1200.0, dt=2.0, steps=600,
                 thermo_every=10, traj_every=300, tau_t=50.0, accuracy=1e-4, seed=5, out=tmp_path, plots=False,
                 structure=None)
    temps = res.thermo["temperature_K"]
    assert abs(np.mean(temps[len(temps) // 2:]) / 1200.0 - 1.0) < 0.1
    assert np.all(np.isnan(res.thermo["conserved_eV"]))


@pytest.mark.slow
def test_nose_hoover_invariant_conserved(tmp_path):
    res = run_md(model="nacl", n_ions=N_IONS, ensemble="nvt-nh", temperature=1200.0, dt=1.0, steps=100,
                 thermo_every=10, accuracy=1e-5, tau_t=50.0, seed=2, out=tmp_path, plots=False)
    c = res.thermo["conserved_eV"]
    assert np.max(np.abs(c - c[0])) / N_IONS < 5e-5
    assert np.ptp(res.thermo["total_eV"]) / N_IONS > 5e-4       # the thermostat does exchange energy


@pytest.mark.slow
def test_qeq_nve_charges_and_columns(tmp_path):
    """nacl-qeq in NVE (qeq_nve, extended-Lagrangian start): energy conserved, neutral charges of
    the right size in the trajectory, PCG iterations in thermo.csv."""
    res = run_md(model="nacl-qeq", n_ions=128, ensemble="nve", temperature=1200.0, dt=1.0, steps=40,
                 thermo_every=10, traj_every=20, accuracy=1e-5, seed=4, out=tmp_path, plots=False)
    header, rows = _read_csv(tmp_path / "thermo.csv")
    assert header == COLUMNS + ["pcg_iterations", "total_charge_e"]
    t = res.thermo
    assert np.max(np.abs(t["total_eV"] - t["total_eV"][0])) / 128 < 5e-5
    assert np.all(np.abs(t["total_charge_e"]) < 1e-8)
    assert np.all(t["pcg_iterations"] >= 1)
    last = ase.io.read(tmp_path / "trajectory.extxyz", index=-1)
    q = last.get_charges()
    assert abs(q.sum()) < 1e-6                             # extxyz keeps 8 decimals
    assert np.all(q[last.numbers == 11] > 0) and np.all(q[last.numbers == 17] < 0)
    assert 0.4 < np.mean(q[last.numbers == 11]) < 0.9       # the toy's ±0.65 e
    assert last.get_velocities().shape == (128, 3)


@pytest.mark.slow
@pytest.mark.parametrize("ensemble", ["nvt-langevin", "npt"])
def test_qeq_thermostats_run(tmp_path, ensemble):
    kw = dict(pressure=1.0, tau_p=500.0) if ensemble == "npt" else {}
    res = run_md(model="nacl-qeq", n_ions=128, ensemble=ensemble, temperature=1200.0, dt=2.0, steps=20,
                 thermo_every=10, accuracy=1e-4, seed=4, out=tmp_path, plots=False, **kw)
    assert np.all(np.isfinite(res.thermo["potential_eV"]))
    assert np.all(np.abs(res.thermo["total_charge_e"]) < 1e-6)


@pytest.mark.slow
def test_npt_box_collapse_stops_with_the_step(tmp_path):
    """At 200 kbar with a 50 fs barostat the box shrinks past the 6 % margin the cutoffs were set
    up for: the loop's flag stops the run with a ValueError naming the step."""
    with pytest.raises(ValueError, match=r"at step \d+ the box shrank"):
        run_md(model="nacl", n_ions=N_IONS, ensemble="npt", temperature=1200.0, pressure=2e5, dt=2.0, steps=400,
               thermo_every=10, tau_p=50.0, accuracy=1e-4, out=tmp_path, plots=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local", "qeq"])
def test_checkpoint_model_runs(tmp_path, kind):
    """A checkpoint folder drives the run (NVT Langevin, a few steps); a charge model's predicted
    charges land in the trajectory."""
    ckpt = _checkpoint(tmp_path / "ckpt", kind)
    n = N_IONS if kind == "local" else 216          # the charge model's Gaussian-charge cutoff is 8.5 Å
    res = run_md(molten_nacl(n, jitter=0.05), str(ckpt), ensemble="nvt-langevin", temperature=600.0,
                 dt=0.5, steps=10, thermo_every=5, traj_every=10, out=tmp_path / "run", plots=False)
    assert np.all(np.isfinite(res.thermo["potential_eV"]))
    last = ase.io.read(tmp_path / "run" / "trajectory.extxyz", index=-1)
    assert last.get_velocities().shape == (n, 3)
    if kind == "qeq":
        assert abs(last.get_charges().sum()) < 1e-6
    else:
        assert "charges" not in last.calc.results


@pytest.mark.slow
def test_float32_run(tmp_path):
    res = run_md(model="nacl", n_ions=N_IONS, ensemble="nve", temperature=1200.0, dt=1.0, steps=20,
                 thermo_every=10, accuracy=1e-4, dtype="float32", out=tmp_path, plots=False)
    t = res.thermo
    assert np.max(np.abs(t["total_eV"] - t["total_eV"][0])) / N_IONS < 1e-4


@pytest.mark.slow
def test_overflowed_chunks_are_redone(nve, tmp_path):
    """With no spare neighbour capacity the lists overflow as the lattice melts; each overflowed
    chunk is redone with reallocated lists, and the trajectory equals the fixture's (which never
    overflowed) to rounding."""
    res = run_md(model="nacl", n_ions=N_IONS, ensemble="nve", temperature=1200.0, dt=1.0, steps=40,
                 thermo_every=10, traj_every=20, accuracy=1e-5, seed=3, out=tmp_path, plots=False,
                 capacity_multiplier=1.0)
    assert res.reallocations >= 1
    np.testing.assert_allclose(res.atoms.positions, nve.atoms.positions, atol=1e-7)
    np.testing.assert_allclose(res.thermo["total_eV"], nve.thermo["total_eV"], rtol=0, atol=1e-9)


@pytest.mark.slow
def test_blow_up_stops_with_a_clear_error(tmp_path):
    """A Cl ion placed on top of a Na ion makes the Tosi–Fumi energy −∞ (−C/r⁶ − D/r⁸ at r = 0):
    the driver's finiteness check stops the run with a ValueError that says what to do, and no
    non-finite frame is written."""
    import jax

    atoms = molten_nacl(N_IONS, jitter=0.0)
    na = int(np.flatnonzero(atoms.numbers == 11)[0])
    cl = int(np.flatnonzero(atoms.numbers == 17)[0])
    atoms.positions[cl] = atoms.positions[na]
    jax.config.update("jax_debug_nans", False)      # let the non-finite energy reach the driver's check
    with pytest.raises(ValueError, match="blew up.*overlapping atoms"):
        run_md(atoms, "nacl", ensemble="nve", temperature=1200.0, dt=1.0, steps=20, thermo_every=10,
               accuracy=1e-4, out=tmp_path, plots=False)
    path = tmp_path / "trajectory.extxyz"
    assert not path.exists() or all(np.all(np.isfinite(a.positions)) for a in ase.io.read(path, index=":"))

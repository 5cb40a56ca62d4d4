"""Static response of trained water models against the PBE/def2-SVPD response set (issue 22).

    python benchmarks/water_response.py CHECKPOINT [CHECKPOINT ...] [--out FILE.md]

CHECKPOINT: a :func:`jaxlr.train.save` folder or the name of a shipped model (e.g. the
``water-density`` / ``water-qeq`` folders that ``benchmarks/water_clusters.py --save DIR``
writes), Qeq or density models; other models are listed and skipped (no field response).

For each model and cluster size n = 1…6 (:func:`jaxlr.data.load_water_response`, 5
clusters per size) it prints, as a markdown table:

* α_iso (bohr³, mean over the clusters of the size) of the model — the forward-mode
  derivative of its dipole in a uniform field (:func:`jaxlr.models.polarizability`) —
  and of PBE/def2-SVPD (finite fields), their ratio, and the RMSE of α_iso;
* the anisotropy Δα = √(½[(a₁−a₂)² + (a₂−a₃)² + (a₃−a₁)²]) (eigenvalues a_k, bohr³) of both;
* the dipole RMSE (e·Å) against the def2-SVPD dipoles;
* the ESP RMSE (mHa/e) on the Merz–Kollman shells against the exact PBE/def2-SVPD potential:
  of the density model's predicted density (coefficients and widths,
  :func:`jaxlr.electrostatics.density_esp`), or of the Qeq model's Gaussian charges.

``--per-molecule`` evaluates every model a second time with each water its own neutral
fragment (the charge constraints of the Qeq / density solve taken per molecule), which
switches off intermolecular charge transfer: the difference shows how much of the model's
cluster polarisability is charge flowing between molecules, the known failure of
whole-system charge equilibration (α growing faster than the number of molecules).

The models are trained on PBE/def2-SVP, which has no diffuse functions and under-polarises
water by ~48 % (monomer α_iso 5.29 against 10.10 bohr³ at def2-SVPD,
:mod:`jaxlr.data.generate.water_response`): a model that reproduces its training data
perfectly should show a ratio near 0.52, not 1.  Float64.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np

import jaxlr.data as data
from jaxlr.electrostatics import density_esp
from jaxlr.models import polarizability, polarizability_volume
from jaxlr.train import load_pretrained

HARTREE_EV = 27.211386245988
#: PBE monomer α_iso (bohr³) at the generator's equilibrium geometry, from its header
SVP_MONOMER, SVPD_MONOMER = 5.29, 10.10


def anisotropy(alpha) -> np.ndarray:
    """Δα (same unit as α) of (..., 3, 3) symmetric tensors."""
    a = np.linalg.eigvalsh(0.5 * (alpha + np.swapaxes(alpha, -1, -2)))
    return np.sqrt(0.5 * ((a[..., 0] - a[..., 1]) ** 2 + (a[..., 1] - a[..., 2]) ** 2 + (a[..., 2] - a[..., 0]) ** 2))


def model_esp(potential, variables, dataset) -> tuple:
    """Per structure: ESP RMSE (mHa/e) of the model's charge density and its dipole (e·Å)."""
    loader = data.BatchLoader(list(dataset), potential.species, cutoff=potential.cutoff, batch_size=5)
    rmse = np.full(len(dataset), np.nan)
    dipole = np.zeros((len(dataset), 3))
    params = variables["params"]
    for atoms, _, indices in loader.epoch(None, with_indices=True):
        out = potential.predict(variables, atoms, forces=False)
        for b, i in enumerate(np.asarray(indices)):
            if i < 0:
                continue
            s = dataset[int(i)]
            n = s.n_atoms
            dipole[i] = np.asarray(out.dipole[b])
            if out.coefficients is not None:                 # the density model: its own basis
                c = np.asarray(out.coefficients[b, :n])
                w = np.asarray(out.basis_widths[b, :n])
                n_s = (3 * w.shape[1] - c.shape[1]) // 2
                v = density_esp(s.info["esp_points"], s.positions, c, w[:, :n_s], w[:, n_s:])
            else:                                            # Qeq: Gaussian charges of width σ_Z
                sig = np.asarray(jax.nn.softplus(params["sigma"]))
                channel = np.searchsorted(np.asarray(potential.species), s.numbers)
                v = density_esp(s.info["esp_points"], s.positions, np.asarray(out.charges[b, :n])[:, None],
                                sig[channel][:, None], np.zeros((n, 0)))
            rmse[i] = 1000.0 / HARTREE_EV * float(np.sqrt(np.mean((np.asarray(v) - s.info["esp"]) ** 2)))
    return rmse, dipole


def per_molecule(dataset):
    """The structures with each water as its own neutral fragment."""
    out = []
    for s in dataset:
        frag = data.detect_fragments(s.positions, s.numbers)
        out.append(s.replace(fragments=frag, fragment_charges=np.zeros(int(frag.max()) + 1)))
    return data.Dataset(out)


def evaluate_model(name: str, dataset, label: str = "") -> list[dict] | None:
    potential, variables = load_pretrained(name)           # a folder or a shipped name
    if potential.name not in ("qeq", "density"):
        print(f"{name}: a {potential.name!r} model has no field response; skipped", file=sys.stderr)
        return None
    t0 = time.perf_counter()
    alpha = polarizability_volume(np.asarray(polarizability(potential, variables, dataset, batch_size=5)), "bohr3")
    esp, dipole = model_esp(potential, variables, dataset)
    print(f"{name}: {len(dataset)} clusters in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    ref = polarizability_volume(np.stack([s.info["polarizability"] for s in dataset]), "bohr3")
    ref_dip = np.stack([s.targets["dipole"] for s in dataset])
    sizes = np.array([int(s.info["n_waters"]) for s in dataset])
    rows = []
    for n in sorted(set(sizes.tolist())) + [0]:
        sel = sizes == n if n else np.ones(len(sizes), bool)
        iso_m = np.trace(alpha[sel], axis1=1, axis2=2) / 3
        iso_r = np.trace(ref[sel], axis1=1, axis2=2) / 3
        rows.append({"model": f"{Path(str(name)).name} ({potential.name}{label})", "n": n or "all",
                     "iso_model": iso_m.mean(), "iso_ref": iso_r.mean(), "ratio": (iso_m / iso_r).mean(),
                     "iso_rmse": np.sqrt(np.mean((iso_m - iso_r) ** 2)),
                     "aniso_model": anisotropy(alpha[sel]).mean(), "aniso_ref": anisotropy(ref[sel]).mean(),
                     "dipole_rmse": np.sqrt(np.mean(np.sum((dipole[sel] - ref_dip[sel]) ** 2, axis=1) / 3)),
                     "esp_rmse": np.sqrt(np.mean(esp[sel] ** 2))})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| model | n | α_iso model | α_iso PBE/SVPD | ratio | α_iso RMSE | Δα model | Δα PBE/SVPD "
            "| dipole RMSE (e·Å) | ESP RMSE (mHa/e) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['model']} | {r['n']} | {r['iso_model']:.2f} | {r['iso_ref']:.2f} | {r['ratio']:.2f} | "
                     f"{r['iso_rmse']:.2f} | {r['aniso_model']:.2f} | {r['aniso_ref']:.2f} | "
                     f"{r['dipole_rmse']:.4f} | {r['esp_rmse']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoint folders or names of shipped models")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown to this file")
    ap.add_argument("--per-molecule", action="store_true",
                    help="also evaluate with each water a neutral fragment (no intermolecular charge transfer)")
    args = ap.parse_args(argv)
    dataset = data.load_water_response()
    rows = []
    for name in args.checkpoints:
        rows += evaluate_model(name, dataset) or []
        if args.per_molecule:
            rows += evaluate_model(name, per_molecule(dataset), ", per molecule") or []
    if not rows:
        raise SystemExit("no Qeq or density model among the checkpoints.")
    text = "\n".join([
        f"Static response against PBE/def2-SVPD ({len(dataset)} clusters; α in bohr³, means over each size).",
        "",
        table(rows),
        "",
        f"The training data (PBE/def2-SVP) under-polarise water by {100 * (1 - SVP_MONOMER / SVPD_MONOMER):.0f} % "
        f"(monomer α_iso {SVP_MONOMER:.2f} against {SVPD_MONOMER:.2f} bohr³ at def2-SVPD): a model that reproduced them "
        f"exactly would show a ratio near {SVP_MONOMER / SVPD_MONOMER:.2f}.",
    ])
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the polynomial behind :func:`jaxlr.electrostatics._kernels.erfc_exp` and report its accuracy.

The Ewald real-space kernel needs erfc(x) for the energy and exp(−x²) for the force.
jaxlr evaluates both from one exponential:

    erfc(x) = t · exp(−x²) · P(2t − 1),   t = S / (S + x),   x ≥ 0,  S = 3,

where P approximates erfcx(x)/t = exp(x²) erfc(x) / t, a smooth function of t on (0, 1]
(it tends to S/√π as x → ∞).  P interpolates it at Chebyshev nodes (reference values
from mpmath at 50 digits) and is converted to monomials in u = 2t − 1: the monomial
coefficients stay below 0.4 with Σ|a_k| ≈ 1, so Horner's rule is as accurate as the
Chebyshev sum.  Degree 20 is used in float64, 9 in float32.

Run:  python benchmarks/fit_erfc.py      (needs mpmath; prints the tables for jaxlr/kernels.py
and the largest relative error of erfc on 0 ≤ x ≤ 6 for each degree)
"""

import mpmath as mp
import numpy as np
from numpy.polynomial import chebyshev

SCALE = 3.0
DEGREES = {"double": 20, "single": 9}
mp.mp.dps = 50


def target(u):
    """erfcx(x)/t at u = 2t − 1 (t = S/(S + x))."""
    t = (np.asarray(u) + 1.0) / 2.0
    out = []
    for ti in t:
        x = mp.mpf(SCALE) * (1 / mp.mpf(ti) - 1)
        out.append(float(mp.erfc(x) * mp.exp(x * x) / mp.mpf(ti)))
    return np.array(out)


def fit(degree):
    nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    cheb = chebyshev.chebfit(nodes, target(nodes), degree)
    return chebyshev.cheb2poly(cheb)


def max_relative_error(coef, dtype, x_max):
    xs = np.linspace(0.0, x_max, 3001)
    exact = np.array([float(mp.erfc(x)) for x in xs])
    x = xs.astype(dtype)
    t = dtype(SCALE) / (dtype(SCALE) + x)
    u = dtype(2) * t - dtype(1)
    poly = np.full_like(x, dtype(coef[-1]))
    for c in coef[-2::-1]:
        poly = poly * u + dtype(c)
    approx = t * np.exp(-x * x) * poly
    return float(np.max(np.abs(approx / exact - 1.0)))


def main():
    for name, degree in DEGREES.items():
        coef = fit(degree)
        dtype = np.float64 if name == "double" else np.float32
        err = max_relative_error(coef, dtype, 6.0 if name == "double" else 4.0)
        print(f"{name}: degree {degree}, max relative error of erfc {err:.2e}")
        print("    (" + ", ".join(repr(float(c)) for c in coef) + ")")


if __name__ == "__main__":
    main()

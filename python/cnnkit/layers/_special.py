"""The error function on whole arrays (numpy or CuPy), in the input's dtype.

W. J. Cody's rational Chebyshev approximations ("Rational Chebyshev approximations for the error function",
Math. Comp. 23, 1969), the coefficient sets of his CALERF: erf(x) = x P(x^2) / Q(x^2) for |x| <= 0.46875;
erfc(x) = exp(-x^2) P(x) / Q(x) for 0.46875 < |x| <= 4; erfc(x) = exp(-x^2) / x (1/sqrt(pi) - P(1/x^2) /
(x^2 Q(1/x^2))) for 4 < |x| < 6; +-1 from 6 on, where erfc is below half a float64 ulp of 1. Relative error
below 1e-15 in float64 (a few roundings), a few float32 ulps in float32. Every branch is evaluated on a
clamped copy of |x| and the right one picked per element, so no branch divides by zero, overflows or
underflows.
"""
from .._xp import array_module

_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
      1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
      8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
      2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
      3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
      6.58749161529837803e-4, 1.63153871373020978e-2)
_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
      2.33520497626869185e-3)
_SQRPI = 5.6418958354775628695e-1   # 1 / sqrt(pi)
_SMALL, _MID, _BIG = 0.46875, 4.0, 6.0   # erfc(6) ~ 2e-17 is below half an ulp of 1: erf rounds to +-1 there


def _ratio(t, z, num, den, n):
    """Cody's nested (Horner) evaluation of one rational function: the numerator starts at num[-1] z and
    the denominator at z; each step adds num[i] / den[i] and multiplies by z; the last terms are num[n], den[n]."""
    xnum, xden = t(num[-1]) * z, z
    for i in range(n):
        xnum = (xnum + t(num[i])) * z
        xden = (xden + t(den[i])) * z
    return (xnum + t(num[n])) / (xden + t(den[n]))


def _exp_neg_sq(xp, t, y):
    """exp(-y^2) as exp(-s^2) exp(-(y - s)(y + s)) with s = y rounded down to 1/16: the large part of the
    exponent is then exact, which keeps the relative error of the product near one rounding."""
    s = xp.trunc(y * t(16)) / t(16)
    return xp.exp(-s * s) * xp.exp(-(y - s) * (y + s))


def erf(x):
    """erf(x) elementwise for a float32 or float64 array (numpy or CuPy); the result has x's dtype."""
    xp = array_module(x)
    t = x.dtype.type
    y = xp.abs(x)
    # |x| <= 0.46875: erf directly
    ys = xp.minimum(y, t(_SMALL))
    small = x * _ratio(t, ys * ys, _A, _B, 3)
    # 0.46875 < |x| <= 4: erfc(|x|)
    ym = xp.clip(y, t(_SMALL), t(_MID))
    erfc_mid = _exp_neg_sq(xp, t, ym) * _ratio(t, ym, _C, _D, 7)
    # |x| > 4: erfc(|x|) from the asymptotic form in 1 / x^2
    yb = xp.clip(y, t(_MID), t(_BIG))
    z = t(1) / (yb * yb)
    erfc_big = _exp_neg_sq(xp, t, yb) * (t(_SQRPI) - z * _ratio(t, z, _P, _Q, 4)) / yb
    erfc_abs = xp.where(y <= t(_MID), erfc_mid, erfc_big)
    large = xp.copysign((t(0.5) - erfc_abs) + t(0.5), x)
    return xp.where(y <= t(_SMALL), small, xp.where(y >= t(_BIG), xp.copysign(t(1), x), large)).astype(x.dtype,
                                                                                                     copy=False)


__all__ = ["erf"]

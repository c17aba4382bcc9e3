"""Shared pieces of the figure families: checks, labels, units and colour scales.

Everything here works on host NumPy values taken from xarray objects; figures
are built with :class:`matplotlib.figure.Figure` directly (never ``pyplot``), so
no GUI backend, global figure registry or ``plt.close`` is involved. Map
panels (projection, coastlines, gridlines, layout) are in
:mod:`pipeline.figures.maps`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.colors import Colormap, Normalize

#: Colour of cells with no value (not a complete cell, or a failed fit).
MISSING_COLOUR = "0.82"
#: Widest figure, in inches (a full text width in most journals).
FIG_WIDTH = 7.0
#: Diverging colormap of signed fields (EOFs, coefficients, anomalies), centred on zero.
DIVERGING = "RdBu_r"
#: Sequential colormap of positive fields (R², standard deviations).
SEQUENTIAL = "viridis"
#: Percentile of the finite values that ends a sequential colour scale (R², sd).
UPPER_PERCENTILE = 99.0
#: Mean width of one character of a suptitle (14.4 pt), inches.
TITLE_CHAR_W = 0.085


def require(ds: xr.Dataset, names: Sequence[str], what: str) -> None:
    """Raise if ``ds`` is not a Dataset or lacks one of the variables ``names``.

    Raises
    ------
    TypeError
        If ``ds`` is not an :class:`xarray.Dataset`.
    ValueError
        If a variable is missing, naming it and the store it should come from.
    """
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"The {what} figure needs an xarray.Dataset; got {type(ds).__name__}.")
    missing = [name for name in names if name not in ds.variables]
    if missing:
        raise ValueError(
            f"The {what} figure needs the variable(s) {', '.join(missing)} in its store "
            f"(field {field_name(ds)!r}); see docs/stores.md."
        )


def count(n: int | None, available: int, name: str = "n_maps") -> int:
    """``n`` panels checked to be a positive integer, capped at ``available`` (``None``: all)."""
    if n is None:
        return available
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer; got {n!r}.")
    return min(int(n), available)


def field_name(ds: xr.Dataset) -> str:
    """The ``field_name`` attribute of a store, or ``"field"``."""
    return str(ds.attrs.get("field_name", "field"))


# ---------------------------------------------------------------- units
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_TOKEN = re.compile(r"\s*(?:(?P<open>\()|(?P<close>\))|(?P<div>/)|(?P<pow>(?:\^|\*\*)\s*[+-]?\d+)|"
                    r"(?P<mul>[*·.])|(?P<sym>[A-Za-z_°%µ]+)(?P<exp>[+-]?\d+)?|(?P<one>1(?![\d.])))")


def _unit_powers(text: str) -> dict[str, int]:
    """``{symbol: exponent}`` of a UDUNITS-style unit string, in order of appearance.

    Grammar: factors multiplied by juxtaposition, ``*``, ``.`` or ``·`` and
    divided by ``/`` (which takes the next factor only, as in UDUNITS); a
    factor is a symbol or a parenthesised expression, raised by ``^n``,
    ``**n`` or a trailing integer (``m2``, ``s-1``); ``1`` is dimensionless.
    Raises ``ValueError`` on anything else.
    """
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ValueError(text)
        tokens.append(match)
        pos = match.end()

    def expression(i: int) -> tuple[dict[str, int], int]:
        powers: dict[str, int] = {}
        sign = 1
        while i < len(tokens) and tokens[i].lastgroup != "close":
            kind = tokens[i].lastgroup
            if kind in ("div", "mul"):
                if kind == "div":
                    sign = -1
                i += 1
                continue
            if kind == "open":
                inner, i = expression(i + 1)
                if i >= len(tokens) or tokens[i].lastgroup != "close":
                    raise ValueError(text)
                i += 1
            elif kind == "one":
                inner, i = {}, i + 1
            elif kind in ("sym", "exp"):
                exp = tokens[i].group("exp")
                inner, i = {tokens[i].group("sym"): int(exp) if exp else 1}, i + 1
            else:
                raise ValueError(text)
            if i < len(tokens) and tokens[i].lastgroup == "pow":
                power = int(tokens[i].group("pow").lstrip("^*").strip())
                inner = {k: v * power for k, v in inner.items()}
                i += 1
            for k, v in inner.items():
                powers[k] = powers.get(k, 0) + sign * v
            sign = 1
        return powers, i

    powers, end = expression(0)
    if end != len(tokens):
        raise ValueError(text)
    return powers


def clean_units(units: object) -> str:
    """A unit string in clean notation: ``(m)/(K)`` -> ``m K⁻¹``, ``(K)^2`` -> ``K²``.

    Also ``K year-1`` -> ``K year⁻¹``, ``m2`` -> ``m²``, ``(m)/(1)`` -> ``m``;
    dimensionless units (``1``, ``""``, ``None``, or everything cancelling)
    give ``""``. Symbols keep their order of first appearance; a string that
    is not a product of powers of symbols (``"10 m"``, ``"days since ..."``)
    is returned stripped, as it is.
    """
    if units is None:
        return ""
    text = str(units).strip()
    try:
        powers = _unit_powers(text)
    except ValueError:
        return text
    parts = [sym if exp == 1 else sym + str(exp).translate(_SUPERSCRIPT) for sym, exp in powers.items() if exp]
    return " ".join(parts)


def label(da: xr.DataArray | None, text: str | None = None, units: str | None = None) -> str:
    """An axis label ``"text (units)"`` from a variable's ``long_name``/``units``, units cleaned.

    Dimensionless quantities (units ``"1"`` or none) get no parenthesis.
    """
    text = text if text is not None else str(da.attrs.get("long_name", da.name))
    units = clean_units(units if units is not None else (da.attrs.get("units") if da is not None else None))
    return f"{text} ({units})" if units else text


def wrap_title(text: str, width: float) -> str:
    """``text`` with each of its lines wrapped to fit a figure ``width`` inches wide."""
    chars = max(int(width / TITLE_CHAR_W), 20)
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


# ---------------------------------------------------------------- colour scales
def colormap(name: str) -> Colormap:
    """A copy of a registered colormap that draws NaN cells in :data:`MISSING_COLOUR`."""
    return colormaps[name].with_extremes(bad=MISSING_COLOUR)


def symmetric_limit(values: np.ndarray, q: float = 100.0) -> float:
    """The colour limit ``v`` of a map drawn on ``[-v, v]``: the ``q``-th percentile of ``|x|``.

    Over the finite values; ``q = 100`` gives ``max |x|`` (nothing clipped).
    Falls back to ``max |x|``, then 1, when the percentile is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.abs(values[np.isfinite(values)])
    if not finite.size:
        return 1.0
    vmax = float(np.percentile(finite, q))
    vmax = vmax if vmax > 0 else float(finite.max())
    return vmax if vmax > 0 else 1.0


def symmetric_norm(values: np.ndarray, q: float = UPPER_PERCENTILE) -> tuple[Normalize, str]:
    """Diverging scale ``[-v, v]`` centred on zero, ``v`` the ``q``-th percentile of ``|x|``, and its ``extend``.

    A few extreme cells (a coastal corner, one grid point) would otherwise
    wash out the pattern of a signed field; cells beyond ``±v`` are drawn in
    the end colours and the colorbar gets arrows on the clipped side(s).
    """
    values = np.asarray(values, dtype=np.float64)
    vmax = symmetric_limit(values, q)
    finite = values[np.isfinite(values)]
    above = bool(finite.size and finite.max() > vmax)
    below = bool(finite.size and finite.min() < -vmax)
    extend = "both" if above and below else "max" if above else "min" if below else "neither"
    return Normalize(vmin=-vmax, vmax=vmax), extend


def upper_norm(values: np.ndarray, q: float = UPPER_PERCENTILE) -> tuple[Normalize, str]:
    """Sequential scale ``[0, P_q]`` of a positive field and the colorbar ``extend`` it needs.

    ``P_q`` is the ``q``-th percentile of the finite values, so a few extreme
    cells do not wash out the rest (R² ≈ 0.1 everywhere still shows its
    pattern); cells above it are drawn in the top colour and the colorbar
    gets an arrow (``extend="max"``). Falls back to the maximum, then 1, when
    the percentile is not positive.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return Normalize(0.0, 1.0), "neither"
    vmax = float(np.percentile(finite, q))
    if vmax <= 0:
        vmax = float(finite.max()) if finite.max() > 0 else 1.0
    return Normalize(0.0, vmax), ("max" if finite.max() > vmax else "neither")

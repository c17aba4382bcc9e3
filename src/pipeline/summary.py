"""The run summary: the numbers of one run in one page, the first page of the Snakemake report.

:func:`collect` reads the stores of a run and the logs of its jobs into a
:class:`Summary`: a table for the run (version, commit, backends) and one
table per field, in sections:

* Field: period (first and last time step), time steps, grid and domain,
  cells, missing cells (a missing value at some time step), units;
* EOF: method, backend, weighting, the variance fraction of each mode, their
  sum, and the neighbouring modes whose North et al. error bars overlap;
* Regression (on its target): predictors, method, the chosen penalty alpha,
  period, lag, paired time steps, R² across cells, backend;
* Posterior: draws, credible level, alpha, the share of cells whose interval
  excludes zero for each predictor;
* Distributions: families, the share of cells each family fits best;
* Run time: seconds of each stage's job, read from the ``done in X.XX s``
  line that :func:`pipeline.logs.logged` ends a job's log with;

and the resolved config (every key, defaults filled in) as YAML.
:func:`render_html` writes it as one HTML page. Each :class:`Entry` keeps
the number read from the store (``value``) beside the text shown (``text``).

Stores are read as the stages read them: the fields store streamed
(:class:`pipeline.stream.ZarrSource`, never whole), the small stores with
:func:`pipeline.io.open_store`; of a moments store only ``valid``.
"""

from __future__ import annotations

import glob
import html
import logging
import math
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml

from pipeline import io, stream
from pipeline.figures._common import clean_units

log = logging.getLogger(__name__)

STORE_STAGES = ("fields", "moments", "eof", "regression", "posterior", "distributions", "joint", "bayes", "sbc")
"""The folders of ``results/{run}/`` holding one store per field, in pipeline order."""
LOG_STAGE = {"fields": "ingest"}
"""The log folder of a store folder where it differs (``logs/ingest/x.log`` for ``fields/x.zarr``)."""
DONE = re.compile(r"\bdone in (\d+(?:\.\d*)?) s\s*$")
"""The last line :func:`pipeline.logs.logged` writes for a job that succeeded."""
MISSING_BUDGET_MB = 256
"""Bytes per tile when a field without a moments store is read to count its missing cells."""


@dataclass(frozen=True)
class Entry:
    """One row of a table: a label, the value read from a store, and the text shown."""

    label: str
    value: Any
    text: str


@dataclass(frozen=True)
class Table:
    """The summary of a field (or of the run): titled sections of entries."""

    name: str
    sections: tuple[tuple[str, tuple[Entry, ...]], ...]

    def entry(self, section: str, label: str) -> Entry:
        """The entry ``label`` of ``section``; KeyError naming both if there is none."""
        for title, entries in self.sections:
            if title == section:
                for e in entries:
                    if e.label == label:
                        return e
        raise KeyError(f"The summary of {self.name} has no entry {label!r} in a section {section!r}.")


@dataclass(frozen=True)
class Summary:
    """The run's tables (the run first, then one per field) and its resolved config as YAML."""

    run: str
    tables: tuple[Table, ...]
    config_yaml: str

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"The summary has no table {name!r}; it has {[t.name for t in self.tables]}.")

    def value(self, name: str, section: str, label: str) -> Any:
        """The value of one entry: ``summary.value("x", "EOF", "variance fractions")``."""
        return self.table(name).entry(section, label).value


# ---------------------------------------------------------------- formatting


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.1f} %"


def _num(x: float) -> str:
    return f"{x:.4g}"


def _date(t: Any) -> str:
    """A time coordinate value as YYYY-MM-DD (datetime64 or a cftime date)."""
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t, unit="D"))
    return t.isoformat()[:10] if hasattr(t, "isoformat") else str(t)


def _seconds(s: float | None) -> str:
    return "not logged" if s is None else f"{s:.2f} s"


# ---------------------------------------------------------------- sections


def count_missing(source: stream.FieldSource, budget_mb: float = MISSING_BUDGET_MB) -> int:
    """Cells of ``source`` with a missing (NaN) value at some time step, read tile by tile."""
    missing = 0
    for tile in stream.plan_tiles(source, int(budget_mb * 2**20)):
        missing += int(np.isnan(source.read(tile)).any(axis=0).sum())
    return missing


def missing_from_moments(path: str | os.PathLike) -> int:
    """Cells that are not complete (``~valid``) in a moments store; only ``valid`` is read."""
    io.check_store(path, "moments store", checksums=False)
    with xr.open_zarr(path, consolidated=False) as ds:
        return int((~ds["valid"].values.astype(bool)).sum())


def field_entries(source: stream.FieldSource, missing: int) -> tuple[Entry, ...]:
    """Period, time steps, grid, domain, cells, missing cells and units of a fields store."""
    n_time, n_lat, n_lon = source.shape
    cells = n_lat * n_lon
    first, last = _date(source.time[0]), _date(source.time[-1])
    lat, lon = (float(source.lat.min()), float(source.lat.max())), (float(source.lon.min()), float(source.lon.max()))
    entries = [
        Entry("period", (first, last), f"{first} – {last}"),
        Entry("time steps", n_time, str(n_time)),
        Entry("grid", (n_lat, n_lon), f"{n_lat} lat × {n_lon} lon"),
        Entry("domain", (*lat, *lon), f"lat {lat[0]:g} to {lat[1]:g}, lon {lon[0]:g} to {lon[1]:g} (degrees)"),
        Entry("cells", cells, str(cells)),
        Entry("missing cells", missing, f"{missing} ({_pct(missing / cells)}), left out of every fit"),
        Entry("units", source.units, source.units or "none given"),
    ]
    processing = source.attrs.get("time_processing")
    if processing:
        entries.append(Entry("time processing", str(processing), str(processing)))
    return tuple(entries)


def overlapping_modes(eigenvalue: np.ndarray, error: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Neighbouring modes (k, k+1), numbered from 1, whose intervals λ ± δλ overlap (North et al. 1982)."""
    return tuple((k + 1, k + 2) for k in range(eigenvalue.size - 1)
                 if eigenvalue[k] - error[k] <= eigenvalue[k + 1] + error[k + 1])


def eof_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """Method, backend, weighting, modes, variance fractions and North overlaps of an eof store."""
    fractions = tuple(float(v) for v in ds["variance_fraction"].values)
    modes = [int(m) for m in ds["mode"].values]
    pairs = overlapping_modes(ds["eigenvalue"].values, ds["north_error"].values)
    return (
        Entry("method", str(ds.attrs.get("method")), str(ds.attrs.get("method"))),
        Entry("backend", str(ds.attrs.get("array_backend")), str(ds.attrs.get("array_backend"))),
        Entry("weighting", str(ds.attrs.get("weighting")), str(ds.attrs.get("weighting"))),
        Entry("modes", len(modes), str(len(modes))),
        Entry("variance fractions", fractions, ", ".join(f"EOF{m} {_pct(f)}" for m, f in zip(modes, fractions))),
        Entry("leading modes together", sum(fractions), _pct(sum(fractions))),
        Entry("overlapping North error bars", pairs,
              ", ".join(f"EOF{a}–EOF{b}" for a, b in pairs) or "none: every mode separated from its neighbours"),
    )


def _valid(values: np.ndarray) -> np.ndarray:
    return values[np.isfinite(values)]


def regression_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """Predictors, method, chosen alpha, period, lag, paired steps, R² and backend of a regression store."""
    method = str(ds.attrs.get("method"))
    alpha = float(ds["alpha"].values)
    grid = ds["alpha_grid"].values
    if method == "ols":
        alpha_text = "0 (OLS: no penalty)"
    else:
        chosen_by = "generalized cross-validation" if method == "ridge" else "K-fold cross-validation"
        alpha_text = (f"{_num(alpha)} (for standardized predictors; chosen by {chosen_by} among {grid.size} "
                      f"candidates from {_num(grid.min())} to {_num(grid.max())})")
    predictors = [str(p) for p in ds["predictor"].values]
    lag, alignment = int(ds.attrs.get("lag", 0)), str(ds.attrs.get("alignment", ""))
    r2 = _valid(ds["r2"].values)
    r2_stats = (float(np.median(r2)), float(np.percentile(r2, 99))) if r2.size else (math.nan, math.nan)
    return (
        Entry("predictor field", str(ds.attrs.get("predictor_field")), str(ds.attrs.get("predictor_field"))),
        Entry("predictors", tuple(predictors), ", ".join(predictors)),
        Entry("method", method, method),
        Entry("alpha", alpha, alpha_text),
        Entry("period", str(ds.attrs.get("period")), str(ds.attrs.get("period"))),
        Entry("lag", lag, f"0 (predictor and target at the same {alignment} step)" if lag == 0 else
              f"{lag} {alignment} step{'s' if lag != 1 else ''}, by which the predictor leads the target"),
        Entry("paired time steps", int(ds.attrs.get("n_samples", 0)), str(ds.attrs.get("n_samples"))),
        Entry("R² across cells", r2_stats, f"median {r2_stats[0]:.3f}, 99th percentile {r2_stats[1]:.3f}"),
        Entry("condition number", float(ds.attrs.get("condition_number", math.nan)),
              _num(float(ds.attrs.get("condition_number", math.nan)))),
        Entry("backend", str(ds.attrs.get("array_backend")), str(ds.attrs.get("array_backend"))),
    )


def posterior_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """Draws, credible level, alpha and the cells whose interval excludes zero, per predictor."""
    level = float(ds.attrs.get("credible_level", math.nan))
    excludes = {}
    for p in ds["predictor"].values:
        low, high = ds["ci_lower"].sel(predictor=p).values, ds["ci_upper"].sel(predictor=p).values
        fitted = np.isfinite(low) & np.isfinite(high)
        excludes[str(p)] = float(np.mean(((low > 0) | (high < 0))[fitted])) if fitted.any() else math.nan
    alpha = float(ds.attrs.get("alpha", math.nan))
    return (
        Entry("draws", int(ds.attrs.get("n_draws", 0)), f"{ds.attrs.get('n_draws')} (seed {ds.attrs.get('seed')})"),
        Entry("credible level", level, _pct(level)),
        Entry("alpha", alpha, f"{_num(alpha)} (source: {ds.attrs.get('alpha_source')})"),
        Entry("cells whose interval excludes 0", excludes, ", ".join(f"{p} {_pct(f)}" for p, f in excludes.items())),
        Entry("backend", str(ds.attrs.get("array_backend")), str(ds.attrs.get("array_backend"))),
    )


def distribution_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """Families, the share of fitted cells each fits best, fitted and constant cells of a distributions store."""
    families = [str(f) for f in ds["family"].values]
    best = ds["best_family"].values.ravel()
    fitted = best[best >= 0]
    shares = {f: float(np.mean(fitted == i)) if fitted.size else math.nan for i, f in enumerate(families)}
    ranked = sorted(shares.items(), key=lambda kv: -kv[1] if math.isfinite(kv[1]) else 0.0)
    return (
        Entry("families", tuple(families), ", ".join(families)),
        Entry("best family (lowest AIC)", shares, ", ".join(f"{f} {_pct(s)}" for f, s in ranked)),
        Entry("series", str(ds.attrs.get("series_description", "")), str(ds.attrs.get("series_description", ""))),
        Entry("fitted cells", int(fitted.size), str(fitted.size)),
        Entry("values per cell", int(ds.attrs.get("n_samples", 0)), str(ds.attrs.get("n_samples"))),
        *_return_level_entries(ds),
        Entry("backend", str(ds.attrs.get("array_backend")), str(ds.attrs.get("array_backend"))),
    )


def _return_level_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """The median of the longest return level of the extreme-value family, and the share of cells with ξ ≠ 0."""
    out = []
    families = [str(f) for f in ds["family"].values]
    family = next((f for f in ("gev", "gpd", "gumbel_r") if f in families), None)
    if "return_level" in ds and family is not None:
        period = float(ds["return_period"].values.max())
        level = ds["return_level"].sel(family=family, return_period=period)
        units = clean_units(str(level.attrs.get("units", "")))
        value = float(level.median())
        out.append(Entry(f"{period:g}-year return level ({family}, median over cells)", value,
                         f"{value:.4g} {units}".rstrip()))
    if "lr_pvalue" in ds:
        p = ds["lr_pvalue"].values
        share = float(np.mean(p[np.isfinite(p)] < 0.05)) if np.isfinite(p).any() else math.nan
        out.append(Entry("cells where GEV beats Gumbel (likelihood ratio, 5 %)", share, _pct(share)))
    return tuple(out)


def bayes_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """The sampler and its size, the median posterior of the longest return level, and the flagged cells."""
    period = float(ds["return_period"].values.max())
    median = float(ds["return_level_median"].sel(return_period=period).median())
    units = clean_units(str(ds["return_level_median"].attrs.get("units", "")))
    cells = int(np.isfinite(ds["rhat"].isel(param=0).values).sum())
    failed = int(ds.attrs.get("n_failed", 0))
    size = f"{str(ds.attrs.get('sampler', '')).upper()}, {ds.attrs.get('chains')} chains × {ds.attrs.get('draws')} draws"
    out: tuple[Entry, ...] = (
        Entry("sampler", size, size),
        Entry(f"{period:g}-year level, posterior median (median over cells)", median, f"{median:.4g} {units}".rstrip()),
        Entry("cells failing R-hat, ESS or divergence checks", failed, f"{failed} of {cells}"),
    )
    if int(ds.attrs.get("n_fallback", 0)):
        n = int(ds.attrs["n_fallback"])
        out += (Entry("cells re-sampled by HMC (envelope or k-hat failed)", n, f"{n} of {cells}"),)
    if "crps_skill" in ds:
        skill = float(ds["crps_skill"].median())
        p = float(ds.attrs.get("pit_chi2_pvalue", math.nan))
        out += (Entry(f"held-out last {ds.sizes['heldout']} values: median CRPS skill against climatology", skill,
                      f"{skill:.2f}"),
                Entry("PIT uniformity (pooled χ², optimistic)", p, f"p = {p:.2g}"),)
    return out


def sbc_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """Per sampler, the rank-test p-value of each parameter and whether all pass; the power of the test."""
    level = float(ds.attrs.get("level", 0.01))
    out = [Entry("simulated cells, ranks among", (int(ds.sizes["cell"]), int(ds.attrs.get("n_ranks", 0))),
                 f"{ds.sizes['cell']} cells, {ds.attrs.get('n_ranks')} posterior draws, χ² at level {level:g}")]
    for sampler in dict.fromkeys(str(v) for v in ds["sampler"].values):
        sel = ds.isel(test=np.flatnonzero(ds["sampler"].values == sampler))
        pvals = {str(k): float(v) for k, v in zip(sel["param"].values, sel["p_value"].values)}
        verdict = "passed" if min(pvals.values()) > level else "FAILED"
        out.append(Entry(f"{sampler}: rank-test p-values", pvals,
                         f"{verdict}: " + ", ".join(f"{k} {v:.2g}" for k, v in pvals.items())))
    power = {str(a): float(v) for a, v in zip(ds["alternative"].values, ds["power"].values)}
    out.append(Entry("power against a sampler with", power, ", ".join(f"{a}: {v:.2f}" for a, v in power.items())))
    return tuple(out)


def joint_entries(ds: xr.Dataset) -> tuple[Entry, ...]:
    """The index, the median correlations and the median conditional and marginal exceedance probabilities."""
    rho = {str(m): float(ds["rho"].sel(model=m).median()) for m in ds["model"].values}
    given = float(ds["p_exceed_given"].sel(model="copula").median())
    marginal = float(ds["p_exceed"].median())
    return (
        Entry("index", str(ds.attrs.get("index_name", "")), str(ds.attrs.get("index_name", ""))),
        Entry("period", str(ds.attrs.get("period", "")), str(ds.attrs.get("period", ""))),
        Entry("median correlation", rho, ", ".join(f"{m} {v:.2f}" for m, v in rho.items())),
        Entry("P(Y > y_q | X > x_q), median (copula)", given,
              f"{given:.2f} against {marginal:.2f} unconditionally (q_x {ds.attrs.get('q_x')}, q_y {ds.attrs.get('q_y')})"),
    )


def elapsed(log_file: str | os.PathLike) -> float | None:
    """The seconds of the last ``done in X.XX s`` line of a job's log; None without one (or without the log)."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = DONE.search(line)
        if match:
            return float(match.group(1))
    return None


def stage_seconds(logs: str | os.PathLike, stage: str, name: str) -> tuple[float | None, int]:
    """Seconds of a stage's jobs for one field, and how many jobs logged them.

    ``stage`` is a store folder (``fields`` is logged as ``ingest``). The
    moments of a field split into tile jobs (``moments/x.1-of-3.log``, ...)
    add up the tiles and the reduce job (``moments/x.log``).
    """
    folder = Path(logs) / LOG_STAGE.get(stage, stage)
    files = [folder / f"{name}.log"]
    if stage == "moments":
        files += sorted(folder.glob(f"{glob.escape(name)}.*-of-*.log"))  # the tile jobs
    times = [t for t in (elapsed(f) for f in files) if t is not None]
    return (sum(times) if times else None), len(times)


def time_entries(logs: str | os.PathLike, name: str, stages: Sequence[str]) -> tuple[Entry, ...]:
    """Seconds per stage (store folders ``stages``, in pipeline order) for one field, and their total."""
    entries, total = [], 0.0
    for stage in stages:
        seconds, jobs = stage_seconds(logs, stage, name)
        label = LOG_STAGE.get(stage, stage)
        text = _seconds(seconds) + (f" over {jobs} jobs" if jobs > 1 else "")
        entries.append(Entry(label, seconds, text))
        total += seconds or 0.0
    entries.append(Entry("total", total, _seconds(total)))
    return tuple(entries)


def run_entries(run: str, attrs: Sequence[Mapping[str, Any]], backend: str) -> tuple[Entry, ...]:
    """The run: its name, and the version, commit, software and array backends its stores record."""
    def recorded(key: str) -> tuple[str, ...]:
        return tuple(sorted({str(a[key]) for a in attrs if key in a}))

    used = recorded("array_backend")
    entries = [
        Entry("run", run, run),
        Entry("pipeline version", recorded("pipeline_version"), ", ".join(recorded("pipeline_version")) or "unknown"),
        Entry("git commit", recorded("pipeline_git_commit"),
              ", ".join(recorded("pipeline_git_commit")) or "not recorded (not a git checkout)"),
        Entry("software", recorded("software"), "; ".join(recorded("software")) or "unknown"),
        Entry("array backend", used, f"{', '.join(used) or 'none'} (config: backend {backend})"),
    ]
    return tuple(entries)


# ---------------------------------------------------------------- collecting and rendering


def _name(store: str | os.PathLike) -> str:
    """The field of a store: ``eof/x.zarr`` -> ``x``."""
    name = Path(store).name
    return name[: -len(".zarr")] if name.endswith(".zarr") else name


def collect(stores: Mapping[str, Sequence[str | os.PathLike]], *, config: Mapping[str, Any],
            logs: str | os.PathLike | None = None) -> Summary:
    """Read the stores of a run (and its job logs) into a :class:`Summary`.

    Parameters
    ----------
    stores : mapping
        Store folder (one of :data:`STORE_STAGES`) to the paths of its stores,
        e.g. ``{"fields": ["results/r/fields/x.zarr"], "eof": [...]}``; a
        field's name is its store's (``x.zarr`` -> ``x``).
    config : mapping
        The resolved config; its ``run`` and ``backend`` are shown, and the
        whole of it as YAML.
    logs : path-like, optional
        The run's log folder (``results/{run}/logs``), for the seconds of each
        stage; without it there is no Run time section.
    """
    unknown = sorted(set(stores) - set(STORE_STAGES))
    if unknown:
        raise ValueError(f"Unknown store folders {unknown}; the summary reads {list(STORE_STAGES)}.")
    paths = {stage: {_name(p): Path(p) for p in stores.get(stage, ())} for stage in STORE_STAGES}
    names = list(dict.fromkeys(n for stage in STORE_STAGES if stage != "sbc" for n in paths[stage]))
    builders = {"eof": ("EOF", eof_entries), "regression": ("Regression", regression_entries),
                "posterior": ("Posterior", posterior_entries),
                "distributions": ("Distributions", distribution_entries), "joint": ("Joint", joint_entries),
                "bayes": ("Bayesian GEV", bayes_entries)}
    tables, attrs = [], []
    for name in names:
        sections = []
        if name in paths["fields"]:
            source = stream.ZarrSource(paths["fields"][name])
            attrs.append(source.attrs)
            moments = paths["moments"].get(name)
            missing = missing_from_moments(moments) if moments is not None else count_missing(source)
            sections.append(("Field", field_entries(source, missing)))
        for stage, (title, build) in builders.items():
            if name in paths[stage]:
                ds = io.open_store(paths[stage][name], f"{stage} store")
                attrs.append(ds.attrs)
                sections.append((title, build(ds)))
        if logs is not None:
            present = [stage for stage in STORE_STAGES if stage != "sbc" and name in paths[stage]]
            sections.append(("Run time", time_entries(logs, name, present)))
        tables.append(Table(name, tuple(sections)))
    for case, path in paths["sbc"].items():  # models, not fields: tables of their own, "SBC: gev"
        ds = io.open_store(path, "sbc store")
        attrs.append(ds.attrs)
        sections = [("Simulation-based calibration", sbc_entries(ds))]
        if logs is not None:
            sections.append(("Run time", time_entries(logs, case, ["sbc"])))
        tables.append(Table(f"SBC: {case}", tuple(sections)))
    run = str(config.get("run", ""))
    overview = Table("run", (("Run", run_entries(run, attrs, str(config.get("backend", "auto")))),))
    first = {k: config[k] for k in ("run", "backend", "fields") if k in config}  # then the stages
    resolved = {**first, **{k: v for k, v in config.items() if k not in first}}
    text = yaml.safe_dump(_plain(resolved), sort_keys=False, default_flow_style=False, allow_unicode=True)
    return Summary(run=run, tables=(overview, *tables), config_yaml=text)


def _plain(value: Any) -> Any:
    """``value`` with mappings as dicts and sequences as lists (YAML-safe), leaves as they are."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


STYLE = """
.pipeline-summary { font-family: system-ui, sans-serif; font-size: 14px; line-height: 1.4; color: #222; }
.pipeline-summary h2 { font-size: 1.4em; font-weight: bold; margin: 0.8em 0 0.4em; }
.pipeline-summary h3 { font-size: 1.15em; font-weight: bold; margin: 1.2em 0 0.3em; }
.pipeline-summary p { margin: 0.3em 0 0.8em; max-width: 60em; }
.pipeline-summary table { border-collapse: collapse; margin: 0 0 1em; }
.pipeline-summary th, .pipeline-summary td { text-align: left; vertical-align: top; padding: 2px 12px 2px 0;
  border-bottom: 1px solid #e5e5e5; }
.pipeline-summary th { font-weight: normal; color: #555; white-space: nowrap; }
.pipeline-summary tr.section th { font-weight: bold; color: #222; padding-top: 0.6em; border-bottom: 1px solid #999; }
.pipeline-summary pre { color: #222; background: #f6f6f6; padding: 0.6em; font-size: 12px; overflow: auto; max-height: 40em; }
"""


def _table_html(table: Table) -> str:
    rows = []
    for title, entries in table.sections:
        rows.append(f'<tr class="section"><th colspan="2">{html.escape(title)}</th></tr>')
        rows += [f'<tr><th scope="row">{html.escape(e.label)}</th><td>{html.escape(e.text)}</td></tr>' for e in entries]
    return f'<table id="summary-{html.escape(table.name)}">\n' + "\n".join(rows) + "\n</table>"


def render_html(summary: Summary) -> str:
    """The summary as one HTML page (HTML5; its styles are scoped to ``.pipeline-summary``, so it can be embedded)."""
    run = html.escape(summary.run)
    parts = [
        "<!DOCTYPE html>",
        '<meta charset="utf-8">',
        f"<title>Run summary: {run}</title>",
        f"<style>{STYLE}</style>",
        '<div class="pipeline-summary">',
        f"<h2>Run summary: {run}</h2>",
        "<p>The numbers of this run, read from its stores; the figures show these. Variance fractions are of "
        "the field's total area-weighted variance; missing cells have a missing value at some time step and are "
        "left out of every fit; alpha is the penalty for standardized predictors; run times are each job's "
        "seconds, from its log.</p>",
        _table_html(summary.tables[0]),
    ]
    for table in summary.tables[1:]:
        parts += [f"<h3>{html.escape(table.name)}</h3>", _table_html(table)]
    parts += [
        "<h3>Resolved config</h3>",
        "<p>Every key of the run's config, with the defaults of the schema filled in.</p>",
        f'<pre class="config">{html.escape(summary.config_yaml)}</pre>',
        "</div>",
    ]
    return "\n".join(parts) + "\n"


def run(stores: Mapping[str, Sequence[str | os.PathLike]], output: str | os.PathLike, *,
        config: Mapping[str, Any], logs: str | os.PathLike | None = None) -> None:
    """Collect the summary of a run and write it as HTML to ``output`` (whole or not at all)."""
    summary = collect(stores, config=config, logs=logs)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(render_html(summary), encoding="utf-8")
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %s: %d fields", output, len(summary.tables) - 1)

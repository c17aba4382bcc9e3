import glob
import os
import re

import pipeline.config as config_checks
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import update_config, validate

EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")  # 1e-8: a string to YAML 1.1


def typed(value):
    """A --config value with its nested string leaves read as YAML numbers or booleans.

    Snakemake types a top-level --config value but reads the leaves of a
    nested one ('moments={n_tiles: 3}') as strings; other strings stay as given.
    """
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if not isinstance(value, str):
        return value
    try:
        loaded = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    if isinstance(loaded, str) and EXPONENT.fullmatch(loaded):
        return float(loaded)
    return loaded if isinstance(loaded, (bool, int, float)) else value


# The --config values, as Snakemake read them, retyped over the config before validation.
CLI_CONFIG = workflow.config_settings.config
update_config(
    config, {k: typed(v) for k, v in CLI_CONFIG.items() if not isinstance(v, str)}
)

# Validate at the door, before any job: each problem stops the run with one sentence
# (pipeline.config; the Snakefile has put src/ on sys.path). Snakemake's validate then fills the defaults.
SCHEMA = os.path.join(workflow.basedir, "schemas", "config.schema.yaml")
try:
    config_checks.check_schema(config, SCHEMA)
    validate(config, schema="../schemas/config.schema.yaml")
    config_checks.check_field_names(config)
    config_checks.check_backend(config["backend"])
except config_checks.ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = f"results/{config['run']}"
FIELDS = list(config["fields"])
EOF_FIELDS = config["eof"]["fields"]
DIST_FIELDS = config["distributions"]["fields"]
JOINT = config["joint"]
JOINT_FIELDS = JOINT["fields"]
BAYES_FIELDS = config["bayes"]["fields"]
SBC_CASES = config["sbc"]["cases"]
REGRESSION = config.get("regression") or {}
TARGETS = [REGRESSION["target"]] if REGRESSION.get("target") else []


SIGN_RULES = [] if isinstance(config["eof"]["sign"], str) else config["eof"]["sign"]


wildcard_constraints:
    field="|".join(FIELDS),
    target="|".join(FIELDS),
    case="regression|normal|lognormal|gev",


def canonical(value):
    """A config value with dict keys sorted, so reordering YAML keys does not rerun a stage."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def section(name, drop=("fields",)):
    """A stage's own config section (as rule params), without the workflow-level keys."""
    return canonical({k: v for k, v in config[name].items() if k not in drop})


def dist_settings(name):
    """The distributions section for one field: the shared keys, then its by_field entry over them."""
    shared = {
        k: v
        for k, v in config["distributions"].items()
        if k not in ("fields", "by_field")
    }
    return canonical(
        {**shared, **config["distributions"].get("by_field", {}).get(name, {})}
    )


def dist_params(wildcards):
    return dist_settings(wildcards.field)


def dist_covariate(wildcards):
    """The EOF store of a non-stationary GEV's covariate ({field, mode}), if the field's settings name one."""
    covariate = dist_settings(wildcards.field).get("covariate", "none")
    return [marker("eof", covariate["field"])] if isinstance(covariate, dict) else []


def dist_figures(name):
    """The figures of a distributions store: the best family, fits at chosen cells, GEV shape and return levels."""
    s = dist_settings(name)
    kinds = ["distribution_map", "distribution_fits"]
    if "gev" in s.get("families", []):
        kinds.append("gev_shape")
    if s.get("series", {}).get("kind", "field") != "field":
        kinds.append("return_level_maps")
    return [figure(kind, name) for kind in kinds]


def joint_index(wildcards):
    """The store of the joint stage's index: a field's EOFs (mode >= 1) or a second fields store (mode 0)."""
    index = JOINT["index"]
    stage = "eof" if index.get("mode", 1) >= 1 else "fields"
    return marker(stage, index["field"])


def field_spec(wildcards):
    """A field's config entry; a synthetic regression field also gets its predictor's entry."""
    spec = dict(config["fields"][wildcards.field])
    other = spec.get("predictors_from")
    if other is not None:
        if other not in config["fields"]:
            raise ValueError(
                f"Field {wildcards.field!r}: predictors_from names {other!r}, which is not declared under 'fields'."
            )
        spec["predictors_spec"] = config["fields"][other]
    return canonical(spec)


def source_files(wildcards):
    """The source files of a field (a glob pattern expanded), so that ingest reruns when they change."""
    spec = config["fields"][wildcards.field]
    if spec["source"] == "synthetic":
        return []
    path = spec["path"]
    if isinstance(path, list):
        return path
    if glob.escape(path) == path:
        return [path]
    files = sorted(glob.glob(path))
    if not files:
        raise ValueError(
            f"Field {wildcards.field!r}: path pattern {path!r} matches no file."
        )
    return files


def sign_series(wildcards):
    """The reference series of the eof.sign rules that apply to a field, so that a new series reruns its EOFs."""
    return [
        sign_rule["series"]
        for sign_rule in SIGN_RULES
        if "series" in sign_rule
        and sign_rule.get("field", wildcards.field) == wildcards.field
    ]


def moments_mem_mb(wildcards):
    """Memory to ask a scheduler for: the budget plus the interpreter and libraries."""
    return int(config["moments"]["memory_budget_mb"]) + 1024


def eof_mem_mb(wildcards):
    return int(config["eof"]["memory_budget_mb"]) + 1024


def store(stage, name):
    """The Zarr store of a stage and field; rules never declare it (see marker)."""
    return f"{RESULTS}/{stage}/{name}.zarr"


def marker(stage, name):
    """The marker file beside a store, written once the store is complete and in place.

    Rules declare markers as outputs and inputs, so Snakemake never deletes a
    store before a rerun; the scripts derive the store from it
    (pipeline.io.store_path and marked_store).
    """
    return f"{store(stage, name)}.done"


def figure(kind, name):
    return f"{RESULTS}/figures/{kind}_{name}.png"


def all_outputs():
    outputs = [
        figure(kind, f)
        for f in EOF_FIELDS
        for kind in (
            "eof_spectrum",
            "eof_maps",
            "eof_correlation",
            "pc_timeseries",
            "summary",
        )
    ]
    outputs += [path for f in DIST_FIELDS for path in dist_figures(f)]
    outputs += [
        figure(kind, f)
        for f in JOINT_FIELDS
        for kind in ("conditional_maps", "conditional_mean_maps")
    ]
    outputs += [figure("bayes_maps", f) for f in BAYES_FIELDS]
    if config["bayes"]["holdout"] > 0:
        outputs += [figure("pit_histogram", f) for f in BAYES_FIELDS]
    outputs += [
        figure(kind, t)
        for t in TARGETS
        for kind in ("regression_maps", "posterior_map", "posterior_sd")
    ]
    outputs += [figure("sbc_ranks", case) for case in SBC_CASES]
    outputs += [marker("fields", f) for f in FIELDS]
    outputs.append(f"{RESULTS}/summary.html")
    return outputs

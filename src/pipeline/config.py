"""The run's config, checked at the door: YAML syntax, the schema, field names, sources, backend.

Every problem is one sentence, raised as :class:`ConfigError`, that names what
is wrong, where (file and line, or key path and value) and what to do. The
workflow runs these checks before any job (``workflow/Snakefile`` and the top of
``workflow/rules/common.smk``); a YAML error in a ``--configfile`` is reported
by Snakemake's command line before the workflow runs, so check a config file
before a run, or in CI, with::

    python -m pipeline.config check my.yaml      # or: make check CONFIG=my.yaml

which prints ``config OK: ...`` and exits 0, or prints the sentence and exits 1.
"""

from __future__ import annotations

import argparse
import difflib
import glob
import json
import os
import sys
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from pipeline.backend import cupy_problem

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
"""The config schema of the workflow this package sits in (draft 2020-12, with defaults)."""

_TYPES = {"integer": "an integer", "number": "a number", "string": "text", "array": "a list",
          "object": "a mapping", "boolean": "true or false", "null": "empty"}


class ConfigError(ValueError):
    """A config that cannot run; the message is one sentence saying what, where and what to do.

    ``key`` is the key path the sentence is about (``["eof", "sign", 0]``), when there is one.
    """

    def __init__(self, message: str, key: Sequence[Any] | None = None):
        super().__init__(message)
        self.key = list(key) if key is not None else None


# ---------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""


def _mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise ConfigError(
                f"{loader.name}, line {key_node.start_mark.line + 1}: the key {key!r} is given twice in one mapping "
                f"(first at line {seen[key]}); keep one of them."
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as a dict, as Snakemake reads it (JSON, else YAML).

    Raises
    ------
    ConfigError
        The file is missing or unreadable, its YAML syntax is broken (the
        sentence names the file and line), a key is given twice, or its top
        level is not a mapping of keys.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"The config file {name} does not exist (looked from {os.getcwd()}); check its path.") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"The config file {name} cannot be read as UTF-8 text ({err}); give a YAML file.") from None
    try:
        data = json.loads(text)
    except ValueError:
        loader = _Loader(text)
        loader.name = name
        try:
            data = loader.get_single_data()
        except yaml.MarkedYAMLError as err:
            raise ConfigError(_yaml_sentence(name, err)) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{name}: {str(err).splitlines()[0]}; fix the YAML there.") from None
        finally:
            loader.dispose()
    if data is None:
        raise ConfigError(f"The config file {name} is empty; give at least a 'fields' section.")
    if not isinstance(data, dict):
        raise ConfigError(f"{name}, line 1: the file holds {_kind(data)}, not a mapping of config keys; "
                          f"start it with keys such as 'fields:'.")
    return data


def _yaml_sentence(name: str, err: yaml.MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    where = f"{name}, line {mark.line + 1}" if mark is not None else name
    detail = f" at column {mark.column + 1}" if mark is not None else ""
    if err.context and err.problem and err.context_mark is not None and err.context_mark.line != mark.line:
        detail += f" ({err.context} from line {err.context_mark.line + 1})"
    hint = " (YAML indents with spaces, not tabs)" if "'\\t'" in problem else ""
    return f"{where}: {problem}{detail}; fix the YAML there{hint}."


def merged(paths: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Several config files merged as Snakemake merges several ``--configfile`` (the later winning, key by key)."""
    config: dict[str, Any] = {}
    for path in paths:
        _update(config, load(path))
    return config


def _update(config: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _update(config[key], value)
        else:
            config[key] = value


# ---------------------------------------------------------------- schema


@cache
def _schema(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def check_schema(config: Any, schema: str | os.PathLike = SCHEMA) -> None:
    """Validate ``config`` against the JSON schema; on failure one sentence about the most relevant error.

    The sentence names the key path (``eof.n_modes``, ``eof.sign[0]``), the
    value given and what is allowed (the enum members, the range, the type,
    the known keys). Defaults are not filled here (``snakemake.utils.validate``
    does that in the workflow).
    """
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(_schema(os.fspath(schema))).iter_errors(config))
    if error is not None:
        named = [error.instance] if "propertyNames" in error.schema_path else _unknown_key(error)
        raise ConfigError(schema_sentence(error), key=[*error.absolute_path, *named])


def schema_sentence(error: Any) -> str:
    """One sentence for a :class:`jsonschema.ValidationError`: key path, value given, what is allowed."""
    path = list(error.absolute_path)
    key, rule, value, inst = _key(path), error.validator, error.validator_value, error.instance
    if rule == "additionalProperties":
        known = list(error.schema.get("properties", {}))
        extra = _unknown_key(error)[0]
        close = difflib.get_close_matches(str(extra), known, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        where, keys = (f"a key of {key}", f"the keys of {key}") if key else ("a top-level key", "the top-level keys")
        return f"Config key {_key([*path, extra])} is not {where}{guess}; {keys} are {_listed(known)}."
    if rule == "pattern" and "propertyNames" in error.schema_path:
        return f"Config key {_key([*path, inst])} is not a valid name; names must match {value} (a letter first)."
    if rule == "required":
        missing = next((k for k in value if k not in inst), value[0])
        why = f" (a {inst['source']} field needs it)" if isinstance(inst.get("source"), str) else ""
        return f"Config key {_key([*path, missing])} is missing{why}; add it."
    if rule == "dependentRequired":
        given = next(k for k, needs in value.items() if k in inst and any(n not in inst for n in needs))
        need = next(n for n in value[given] if n not in inst)
        return f"Config key {key} has {given} but not {need} ({error.message}); add {need} or remove {given}."
    what = f"Config key {key} is {_show(inst)}" if key else f"The config is {_kind(inst)}"
    if rule == "type":
        wanted = " or ".join(_TYPES.get(t, t) for t in ([value] if isinstance(value, str) else value))
        if inst is None:
            return f"Config key {key} has no value, but it must be {wanted}; give one or remove the key."
        if not key:
            return f"The config is {_kind(inst)}, but it must be {wanted}."
        return f"{what} ({_kind(inst)}), but it must be {wanted}{_type_hint(inst, value)}."
    if rule in ("enum", "const"):
        allowed = value if rule == "enum" else [value]
        return f"{what}, which is not allowed; use {'one of ' if len(allowed) > 1 else ''}{_listed(allowed)}."
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{what}, out of range; it must be {_range(error.schema)}."
    if rule in ("minItems", "maxItems"):
        return f"{what}, with {len(inst)} item(s); give {_count(error.schema)} item(s)."
    if rule == "minProperties":
        return f"Config key {key} is empty; give at least {value} entr{'y' if value == 1 else 'ies'} there."
    if rule == "uniqueItems":
        return f"{what}, which repeats an item; list each once."
    if rule == "pattern":
        return f"{what}, which does not match {value}; change it to match."
    if rule == "not" and isinstance(value, dict) and value.get("multipleOf") == 2:
        return f"{what}, an even number; use an odd one."
    if rule == "oneOf":
        forms = [" and ".join(form.get("required", [])) or _flow(form) for form in value]
        if error.context:  # no form matches
            return f"{what}, which has none of its forms; give {', or '.join(forms)}."
        return f"Config key {key} is valid under each of its forms ({'; '.join(forms)}); give only one of them."
    return f"{what}: {_clip(error.message, 120)}; see config/README.md."


def _unknown_key(error: Any) -> list[Any]:
    """The first key an ``additionalProperties: false`` error is about (else nothing)."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return []
    known = error.schema.get("properties", {})
    return [next((k for k in error.instance if k not in known), "?")]


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text


def _show(value: Any) -> str:
    if value is None:
        return "empty"
    return _clip(repr(value) if isinstance(value, str) else _flow(value), 60)


def _flow(value: Any) -> str:
    """A value as YAML flow style (``{mode: 1, lat: 0.0}``, ``[1979]``, ``true``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _kind(value: Any) -> str:
    for kind, name in ((bool, "true/false"), (int, "an integer"), (float, "a number"), (str, "text"),
                       (dict, "a mapping"), (list, "a list"), (type(None), "nothing")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _type_hint(value: Any, wanted: str | list[str]) -> str:
    """What to write instead of a number given as text (YAML 1.1 reads ``1e-8`` as text)."""
    numeric = {"number", "integer"} & ({wanted} if isinstance(wanted, str) else set(wanted))
    if not numeric or not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    mantissa, exp, exponent = value.lower().partition("e")
    if exp and "." not in mantissa:
        return f"; write {mantissa}.0e{exponent} (YAML reads {value} as text)"
    return "; write it without quotes"


def _range(schema: dict[str, Any]) -> str:
    bounds = (("at least", "minimum"), ("greater than", "exclusiveMinimum"),
              ("at most", "maximum"), ("less than", "exclusiveMaximum"))
    return " and ".join(f"{word} {_flow(schema[key])}" for word, key in bounds if key in schema)


def _count(schema: dict[str, Any]) -> str:
    low, high = schema.get("minItems"), schema.get("maxItems")
    if low is not None and low == high:
        return f"exactly {low}"
    return " and ".join(p for p in (low is not None and f"at least {low}", high is not None and f"at most {high}") if p)


def _listed(values: Sequence[Any], limit: int = 150) -> str:
    text = ", ".join(_flow(v) for v in values)
    return text if len(text) <= limit else text[: text.rfind(", ", 0, limit)] + ", ... (see config/README.md)"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- beyond the schema


def check_field_names(config: dict[str, Any]) -> None:
    """Every field a stage names is declared under ``fields`` (and the EOFs it needs are computed)."""
    fields = list(config.get("fields") or {})
    eof = config.get("eof") or {}
    eof_fields = eof.get("fields") or []
    rules = eof.get("sign") if isinstance(eof.get("sign"), list) else []
    sign_fields = [rule["field"] for rule in rules if isinstance(rule, dict) and "field" in rule]
    regression = config.get("regression") or {}
    target = [regression["target"]] if regression.get("target") else []
    named = {
        "eof.fields": eof_fields,
        "eof.sign": sign_fields,
        "distributions.fields": (config.get("distributions") or {}).get("fields") or [],
        "distributions.by_field": list((config.get("distributions") or {}).get("by_field") or {}),
        "joint.fields": (config.get("joint") or {}).get("fields") or [],
        "joint.index": [((config.get("joint") or {}).get("index") or {}).get("field")]
        if (config.get("joint") or {}).get("fields") else [],
        "regression.target": target,
        "regression.predictor": [regression.get("predictor")] if target else [],
    }
    named.update({f"fields.{name}.predictors_from": [spec["predictors_from"]]
                  for name, spec in (config.get("fields") or {}).items()
                  if isinstance(spec, dict) and "predictors_from" in spec})
    for key, names in named.items():
        for name in names:
            if name not in fields:
                raise ConfigError(
                    f"Config key {key} names field {name!r}, which is not declared under "
                    f"'fields' (declared: {', '.join(fields)}).", key=key.split(".")
                )
    if target and regression.get("predictor") not in eof_fields:
        raise ConfigError(
            f"Config key regression.predictor is {regression.get('predictor')!r}, but its EOFs are "
            f"not computed; add it to eof.fields.", key=["regression", "predictor"]
        )
    joint = config.get("joint") or {}
    index = joint.get("index") or {}
    if joint.get("fields") and not index:
        raise ConfigError("Config key joint.fields is set but joint.index is not; name the index, e.g. "
                          "{field: sst, mode: 1} for the first PC of sst.", key=["joint", "index"])
    if joint.get("fields") and index.get("mode", 1) >= 1 and index.get("field") not in eof_fields:
        raise ConfigError(f"Config key joint.index takes a PC of field {index.get('field')!r}, whose EOFs are not "
                          "computed; add it to eof.fields (or set mode: 0 for the field itself).",
                          key=["joint", "index"])
    check_distributions(config)
    for name in (config.get("bayes") or {}).get("fields") or []:
        if name not in ((config.get("distributions") or {}).get("fields") or []):
            raise ConfigError(f"Config key bayes.fields names {name!r}, whose distributions are not fitted; add it to "
                              "distributions.fields (with series.kind: block_maxima).", key=["bayes", "fields"])
    sbc = config.get("sbc") or {}
    n_ranks, n_bins = sbc.get("n_ranks", 99), sbc.get("n_bins", 20)
    if isinstance(n_ranks, int) and isinstance(n_bins, int) and n_bins > 0 and (n_ranks + 1) % n_bins:
        raise ConfigError(f"Config key sbc.n_bins ({n_bins}) must divide sbc.n_ranks + 1 ({n_ranks + 1}), the number "
                          "of possible ranks, so that every bin is equally likely; e.g. n_ranks 99 with n_bins 20.",
                          key=["sbc", "n_bins"])
    for name in sign_fields:
        if name not in eof_fields:
            raise ConfigError(
                f"Config key eof.sign has a rule for field {name!r}, whose EOFs are not "
                f"computed; add it to eof.fields.", key=["eof", "sign"]
            )


def check_distributions(config: dict[str, Any]) -> None:
    """Each distributions field's settings (shared keys under its by_field entry) make sense together."""
    from pipeline import distributions  # the stage's own checks, one sentence each

    section = config.get("distributions") or {}
    shared = {k: v for k, v in section.items() if k not in ("fields", "by_field")}
    eof_fields = (config.get("eof") or {}).get("fields") or []
    for name in section.get("fields") or []:
        try:
            s = distributions.settings({**shared, **(section.get("by_field") or {}).get(name, {})})
        except (TypeError, ValueError) as err:
            raise ConfigError(f"Field {name!r}: {err}", key=["distributions"]) from None
        if isinstance(s.covariate, dict) and s.covariate["field"] not in eof_fields:
            raise ConfigError(f"Field {name!r}: distributions.covariate takes a PC of {s.covariate['field']!r}, whose "
                              "EOFs are not computed; add it to eof.fields.", key=["distributions", "covariate"])


def check_sources(config: dict[str, Any]) -> None:
    """Every source path, glob pattern, list item and sign-rule series exists, seen from the current folder."""
    paths: list[tuple[list[Any], str]] = []
    for name, spec in (config.get("fields") or {}).items():
        if not isinstance(spec, dict) or spec.get("source") not in ("netcdf", "zarr"):
            continue
        raw = spec.get("path")
        key = ["fields", name, "path"]
        items = [([*key, i], p) for i, p in enumerate(raw)] if isinstance(raw, list) else [(key, raw)]
        paths += [(k, p) for k, p in items if isinstance(p, str)]
    rules = (config.get("eof") or {}).get("sign")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and isinstance(rule.get("series"), str):
            paths.append((["eof", "sign", i, "series"], rule["series"]))
    for key, path in paths:
        if os.path.exists(path) or (glob.escape(path) != path and glob.glob(path)):
            continue
        what = "the pattern " if glob.escape(path) != path else ""
        fault = "matches no file" if what else "does not exist"
        raise ConfigError(f"Config key {_key(key)} is {what}{path!r}, which {fault} (seen from {os.getcwd()}); "
                          f"fix it or run from the folder it is relative to.", key=key)


def check_backend(name: str) -> None:
    """``backend: cupy`` needs CuPy and a CUDA device on this machine."""
    if name == "cupy":
        problem = cupy_problem()
        if problem is not None:
            raise ConfigError(f"backend: cupy was asked for but {problem}; use backend: auto or numpy.")


def check(paths: Sequence[str | os.PathLike], schema: str | os.PathLike = SCHEMA) -> str:
    """Every check on the config files ``paths`` (merged in order); a one-line summary when they pass.

    A sentence about a key starts with the file and line that set it.
    """
    config = merged(paths)
    try:
        check_schema(config, schema)
        check_field_names(config)
        check_sources(config)
    except ConfigError as err:
        where = _where(paths, err.key or [])
        raise ConfigError(f"{where}: {err}" if where else str(err), key=err.key) from None
    backend = config.get("backend", "auto")
    check_backend(backend)
    run = config.get("run", "default")
    stages = [f"{stage} of {', '.join(names)}" for stage, names in (
        ("eof", (config.get("eof") or {}).get("fields") or []),
        ("distributions", (config.get("distributions") or {}).get("fields") or []),
        ("joint law with the index", (config.get("joint") or {}).get("fields") or []),
        ("Bayesian GEV", (config.get("bayes") or {}).get("fields") or []),
        ("simulation-based calibration", (config.get("sbc") or {}).get("cases") or [])) if names]
    regression = config.get("regression") or {}
    if regression.get("target"):
        stages.append(f"regression of {regression['target']} on {regression['predictor']}")
    files = ", ".join(os.fspath(p) for p in paths)
    return (f"config OK: {files}: run {run} into results/{run}/; fields {', '.join(config['fields'])}; "
            f"{'; '.join(stages) or 'no stage after ingest'}; backend {backend}.")


def _where(paths: Sequence[str | os.PathLike], key: Sequence[Any]) -> str:
    """``file, line N`` of the key path ``key`` in the last file that sets it (else its deepest parent given)."""
    best: tuple[int, str] = (0, "")
    for path in reversed(paths):
        try:
            node = yaml.compose(Path(path).read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        for depth, part in enumerate(key, start=1):
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)),
                            None)
                mark, node = (pair[0].start_mark, pair[1]) if pair else (None, None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                mark = node.start_mark
            else:
                mark = node = None
            if mark is None:
                break
            if depth > best[0]:
                best = (depth, f"{os.fspath(path)}, line {mark.line + 1}")
        if best[0] == len(key):
            break
    return best[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.config",
                                     description="Check a config file before a run: YAML syntax, the schema, "
                                                 "field names, source paths, backend.")
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="check config files (several are merged, the later winning)")
    check_cmd.add_argument("configfiles", nargs="+", metavar="CONFIG", help="config file(s), as given to --configfile")
    check_cmd.add_argument("--schema", default=os.fspath(SCHEMA), help="the JSON schema (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        print(check(args.configfiles, args.schema))
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

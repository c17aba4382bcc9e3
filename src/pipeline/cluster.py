"""Pre-flight checks for runs on a cluster: placeholder SLURM partitions.

The SLURM profiles under ``workflow/profiles/`` ship with partitions that
cannot exist (:data:`PLACEHOLDER`, e.g. ``CHANGE_ME`` or ``CHANGE_ME_GPU``), so
that an unedited profile stops before anything is submitted, with one sentence
(:func:`check_partitions`), instead of every job failing in ``sbatch``. The
workflow calls it when it starts (``workflow/rules/cluster.smk``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PLACEHOLDER = "CHANGE_ME"
"""A partition name containing this is a placeholder left in a profile."""
PROFILES = "workflow/profiles/slurm/config.yaml or slurm-gpu/config.yaml"


def placeholder_partitions(partitions: Mapping[str, Any]) -> list[str]:
    """The entries of ``partitions`` whose value is still a placeholder, in their order.

    Parameters
    ----------
    partitions : mapping
        Where a partition is set (a rule name, or ``"default-resources"``) to
        its value as given: a string, possibly quoted (``"'CHANGE_ME'"``, as
        Snakemake keeps a resource from the command line or a profile).
        Values that are not strings (unset, or a function of the job) are
        not placeholders.
    """
    return [where for where, value in partitions.items()
            if isinstance(value, str) and PLACEHOLDER in value.strip().strip("'\"")]


def check_partitions(executor: str | None, partitions: Mapping[str, Any]) -> None:
    """Stop a SLURM run whose profile still has a placeholder partition.

    Parameters
    ----------
    executor : str or None
        The name of the executor plugin in use (``"slurm"``, ``"local"``,
        ...); other executors than SLURM are not checked.
    partitions : mapping
        As for :func:`placeholder_partitions`.

    Raises
    ------
    ValueError
        One sentence naming the rules (or default-resources) that still have
        the placeholder, and what to put there.
    """
    if executor != "slurm":
        return
    where = placeholder_partitions(partitions)
    if not where:
        return
    values = sorted({str(partitions[w]).strip().strip("'\"") for w in where})
    plural = "s" if len(values) > 1 else ""
    raise ValueError(
        f"The SLURM partition{plural} {', '.join(values)} (for {', '.join(where)}) {'are' if plural else 'is a'} "
        f"placeholder{plural}, so nothing was submitted; set slurm_partition in the profile ({PROFILES}), or "
        "with --default-resources and --set-resources, to partitions of your cluster (sinfo -s lists them)."
    )

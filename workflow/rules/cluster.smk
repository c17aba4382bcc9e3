# Pre-flight for cluster runs: an unedited SLURM profile (partition CHANGE_ME)
# stops the run with one sentence before any job is submitted
# (pipeline.cluster; workflow/profiles/slurm*/config.yaml).

import sys

from pipeline.cluster import check_partitions


def slurm_partitions():
    """The default slurm_partition as given (profile or command line), and each rule's where it differs."""

    def raw(resources):
        value = resources.get("slurm_partition") if resources is not None else None
        return getattr(value, "raw", value)  # a Resource keeps the text it was given

    default = raw(workflow.resource_settings.default_resources)
    rules = {r.name: raw(r.resources) for r in workflow.rules}
    return {
        "default-resources": default,
        **{name: value for name, value in rules.items() if value != default},
    }


onstart:
    executor = workflow.executor_plugin
    try:
        check_partitions(executor.name if executor else None, slurm_partitions())
    except ValueError as err:
        print(err, file=sys.stderr, flush=True)
        raise SystemExit(1) from None

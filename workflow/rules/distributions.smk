rule distributions:
    input:
        field=store("fields", "{field}"),
    output:
        directory(store("distributions", "{field}")),
    log:
        f"{RESULTS}/logs/distributions/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        distributions={
            k: v for k, v in config["distributions"].items() if k != "fields"
        },
        backend=config["backend"],
    script:
        "../scripts/distributions.py"

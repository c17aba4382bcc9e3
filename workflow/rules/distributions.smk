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
        distributions=section("distributions"),
        backend=config["backend"],
    script:
        "../scripts/distributions.py"

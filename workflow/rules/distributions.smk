rule distributions:
    input:
        field=marker("fields", "{field}"),
    output:
        marker("distributions", "{field}"),
    log:
        f"{RESULTS}/logs/distributions/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        distributions=section("distributions"),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/distributions.py"

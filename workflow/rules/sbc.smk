rule sbc:
    output:
        marker("sbc", "{case}"),
    log:
        f"{RESULTS}/logs/sbc/{{case}}.log",
    conda:
        "../../environment.yml"
    params:
        sbc=section("sbc", drop=("cases",)),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/sbc.py"

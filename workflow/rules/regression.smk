rule regression:
    input:
        target=store("fields", "{target}"),
        predictor_eof=store("eof", REGRESSION.get("predictor", "")),
    output:
        directory(store("regression", "{target}")),
    log:
        f"{RESULTS}/logs/regression/{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        regression=section("regression", drop=()),
        backend=config["backend"],
    script:
        "../scripts/regression.py"

rule regression:
    input:
        target=marker("fields", "{target}"),
        predictor_eof=marker("eof", REGRESSION.get("predictor", "")),
    output:
        marker("regression", "{target}"),
    log:
        f"{RESULTS}/logs/regression/{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        regression=section("regression", drop=()),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/regression.py"

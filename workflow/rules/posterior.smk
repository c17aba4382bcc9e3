rule posterior:
    input:
        target=marker("fields", "{target}"),
        predictor_eof=marker("eof", REGRESSION.get("predictor", "")),
        regression=marker("regression", "{target}"),
    output:
        marker("posterior", "{target}"),
    log:
        f"{RESULTS}/logs/posterior/{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        posterior=section("posterior"),
        regression=section("regression", drop=()),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/posterior.py"

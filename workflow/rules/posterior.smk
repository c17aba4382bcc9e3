rule posterior:
    input:
        target=store("fields", "{target}"),
        predictor_eof=store("eof", REGRESSION.get("predictor", "")),
        regression=store("regression", "{target}"),
    output:
        directory(store("posterior", "{target}")),
    log:
        f"{RESULTS}/logs/posterior/{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        posterior=section("posterior"),
        regression=section("regression", drop=()),
        backend=config["backend"],
    script:
        "../scripts/posterior.py"

rule eof:
    input:
        moments=store("moments", "{field}"),
    output:
        directory(store("eof", "{field}")),
    log:
        f"{RESULTS}/logs/eof/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        eof=section("eof"),
        backend=config["backend"],
    script:
        "../scripts/eof.py"

rule eof:
    input:
        field=store("fields", "{field}"),
        moments=store("moments", "{field}"),
        series=sign_series,
    output:
        directory(store("eof", "{field}")),
    log:
        f"{RESULTS}/logs/eof/{{field}}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=eof_mem_mb,
    params:
        eof=section("eof"),
        backend=config["backend"],
    script:
        "../scripts/eof.py"

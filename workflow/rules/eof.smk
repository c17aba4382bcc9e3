rule eof:
    input:
        field=marker("fields", "{field}"),
        moments=marker("moments", "{field}"),
        series=sign_series,
    output:
        marker("eof", "{field}"),
    log:
        f"{RESULTS}/logs/eof/{{field}}.log",
    conda:
        "../../environment.yml"
    resources:
        mem_mb=eof_mem_mb,
    params:
        eof=section("eof"),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/eof.py"

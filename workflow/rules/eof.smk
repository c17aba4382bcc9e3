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
        eof={k: v for k, v in config["eof"].items() if k != "fields"},
        backend=config["backend"],
    script:
        "../scripts/eof.py"

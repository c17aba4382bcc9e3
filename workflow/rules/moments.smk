rule moments:
    input:
        field=store("fields", "{field}"),
    output:
        directory(store("moments", "{field}")),
    log:
        f"{RESULTS}/logs/moments/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        moments=section("moments"),
        backend=config["backend"],
    script:
        "../scripts/moments.py"

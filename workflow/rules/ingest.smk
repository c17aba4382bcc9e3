rule ingest:
    input:
        source_files,
    output:
        marker("fields", "{field}"),
    log:
        f"{RESULTS}/logs/ingest/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        spec=field_spec,
        output=section("output"),
    script:
        "../scripts/ingest.py"

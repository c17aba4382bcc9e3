rule distributions:
    input:
        field=marker("fields", "{field}"),
        covariate=dist_covariate,
    output:
        marker("distributions", "{field}"),
    log:
        f"{RESULTS}/logs/distributions/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        distributions=dist_params,
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/distributions.py"


rule joint:
    input:
        field=marker("fields", "{field}"),
        index=joint_index,
    output:
        marker("joint", "{field}"),
    log:
        f"{RESULTS}/logs/joint/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        joint=section("joint"),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/joint.py"


rule bayes:
    input:
        marker("distributions", "{field}"),
    output:
        marker("bayes", "{field}"),
    log:
        f"{RESULTS}/logs/bayes/{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        bayes=section("bayes"),
        output=section("output"),
        backend=config["backend"],
    script:
        "../scripts/bayes.py"

# The run summary (pipeline.summary): the numbers of every store of the run,
# the seconds of each job and the resolved config, the report's first page.


rule summary:
    input:
        fields=[marker("fields", f) for f in FIELDS],
        moments=[marker("moments", f) for f in EOF_FIELDS],
        eof=[marker("eof", f) for f in EOF_FIELDS],
        regression=[marker("regression", t) for t in TARGETS],
        posterior=[marker("posterior", t) for t in TARGETS],
        distributions=[marker("distributions", f) for f in DIST_FIELDS],
        joint=[marker("joint", f) for f in JOINT_FIELDS],
        bayes=[marker("bayes", f) for f in BAYES_FIELDS],
        sbc=[marker("sbc", case) for case in SBC_CASES],
    output:
        report(
            f"{RESULTS}/summary.html",
            caption="../report/summary.rst",
            category="0 Summary",
        ),
    log:
        f"{RESULTS}/logs/summary.log",
    conda:
        "../../environment.yml"
    params:
        config=canonical(config),
        logs=f"{RESULTS}/logs",
    script:
        "../scripts/summary.py"

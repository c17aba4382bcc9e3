rule figure_eof_spectrum:
    input:
        marker("eof", "{field}"),
    output:
        report(
            figure("eof_spectrum", "{field}"),
            caption="../report/eof_spectrum.rst",
            category="EOF",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/eof_spectrum_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="eof_spectrum",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_eof_maps:
    input:
        marker("eof", "{field}"),
    output:
        report(
            figure("eof_maps", "{field}"),
            caption="../report/eof_maps.rst",
            category="EOF",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/eof_maps_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="eof_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_eof_correlation:
    input:
        marker("eof", "{field}"),
    output:
        report(
            figure("eof_correlation", "{field}"),
            caption="../report/eof_correlation.rst",
            category="EOF",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/eof_correlation_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="eof_correlation",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_pc_timeseries:
    input:
        marker("eof", "{field}"),
    output:
        report(
            figure("pc_timeseries", "{field}"),
            caption="../report/pc_timeseries.rst",
            category="EOF",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/pc_timeseries_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="pc_timeseries",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_summary:
    input:
        marker("eof", "{field}"),
    output:
        report(
            figure("summary", "{field}"),
            caption="../report/summary.rst",
            category="EOF",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/summary_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="summary",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_regression_maps:
    input:
        marker("regression", "{target}"),
    output:
        report(
            figure("regression_maps", "{target}"),
            caption="../report/regression_maps.rst",
            category="Regression",
            subcategory="{target}",
        ),
    log:
        f"{RESULTS}/logs/figures/regression_maps_{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="regression_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_distribution_map:
    input:
        marker("distributions", "{field}"),
    output:
        report(
            figure("distribution_map", "{field}"),
            caption="../report/distribution_map.rst",
            category="Distributions",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/distribution_map_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="distribution_map",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_distribution_fits:
    input:
        marker("distributions", "{field}"),
    output:
        report(
            figure("distribution_fits", "{field}"),
            caption="../report/distribution_fits.rst",
            category="Distributions",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/distribution_fits_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="distribution_fits",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_gev_shape:
    input:
        marker("distributions", "{field}"),
    output:
        report(
            figure("gev_shape", "{field}"),
            caption="../report/gev_shape.rst",
            category="Distributions",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/gev_shape_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="gev_shape",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_return_level_maps:
    input:
        marker("distributions", "{field}"),
    output:
        report(
            figure("return_level_maps", "{field}"),
            caption="../report/return_level_maps.rst",
            category="Distributions",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/return_level_maps_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="return_level_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_conditional_maps:
    input:
        marker("joint", "{field}"),
    output:
        report(
            figure("conditional_maps", "{field}"),
            caption="../report/conditional_maps.rst",
            category="Joint and conditional",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/conditional_maps_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="conditional_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_bayes_maps:
    input:
        marker("bayes", "{field}"),
    output:
        report(
            figure("bayes_maps", "{field}"),
            caption="../report/bayes_maps.rst",
            category="Bayesian GEV",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/bayes_maps_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="bayes_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_pit_histogram:
    input:
        marker("bayes", "{field}"),
    output:
        report(
            figure("pit_histogram", "{field}"),
            caption="../report/pit_histogram.rst",
            category="Bayesian GEV",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/pit_histogram_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="pit_histogram",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_conditional_mean_maps:
    input:
        marker("joint", "{field}"),
    output:
        report(
            figure("conditional_mean_maps", "{field}"),
            caption="../report/conditional_mean_maps.rst",
            category="Joint and conditional",
            subcategory="{field}",
        ),
    log:
        f"{RESULTS}/logs/figures/conditional_mean_maps_{{field}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="conditional_mean_maps",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_posterior_map:
    input:
        marker("posterior", "{target}"),
    output:
        report(
            figure("posterior_map", "{target}"),
            caption="../report/posterior_map.rst",
            category="Posterior",
            subcategory="{target}",
        ),
    log:
        f"{RESULTS}/logs/figures/posterior_map_{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="posterior_map",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_posterior_sd:
    input:
        marker("posterior", "{target}"),
    output:
        report(
            figure("posterior_sd", "{target}"),
            caption="../report/posterior_sd.rst",
            category="Posterior",
            subcategory="{target}",
        ),
    log:
        f"{RESULTS}/logs/figures/posterior_sd_{{target}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="posterior_sd",
        figures=section("figures"),
    script:
        "../scripts/figure.py"


rule figure_sbc_ranks:
    input:
        marker("sbc", "{case}"),
    output:
        report(
            figure("sbc_ranks", "{case}"),
            caption="../report/sbc_ranks.rst",
            category="Calibration",
            subcategory="{case}",
        ),
    log:
        f"{RESULTS}/logs/figures/sbc_ranks_{{case}}.log",
    conda:
        "../../environment.yml"
    params:
        kind="sbc_ranks",
        figures=section("figures"),
    script:
        "../scripts/figure.py"

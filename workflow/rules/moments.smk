N_TILES = config["moments"]["n_tiles"]

if N_TILES > 1:

    # Scale-out: the tile pass of each field is split into N_TILES jobs (partial
    # statistics and Gram sums), merged by one reduce job.
    scattergather:
        tiles=N_TILES,

    rule moments_tile:
        input:
            field=marker("fields", "{field}"),
        output:
            f"{RESULTS}/moments/{{field}}.tiles/{{scatteritem}}.zarr.done",
        log:
            f"{RESULTS}/logs/moments/{{field}}.{{scatteritem}}.log",
        conda:
            "../../environment.yml"
        resources:
            mem_mb=moments_mem_mb,
        params:
            moments=section("moments"),
            output=section("output"),
            backend=config["backend"],
        script:
            "../scripts/moments_tile.py"

    rule moments:
        input:
            partials=gather.tiles(
                f"{RESULTS}/moments/{{{{field}}}}.tiles/{{scatteritem}}.zarr.done"
            ),
        output:
            marker("moments", "{field}"),
        log:
            f"{RESULTS}/logs/moments/{{field}}.log",
        conda:
            "../../environment.yml"
        params:
            moments=section("moments"),
            output=section("output"),
        script:
            "../scripts/moments_reduce.py"

else:

    rule moments:
        input:
            field=marker("fields", "{field}"),
        output:
            marker("moments", "{field}"),
        log:
            f"{RESULTS}/logs/moments/{{field}}.log",
        conda:
            "../../environment.yml"
        resources:
            mem_mb=moments_mem_mb,
        params:
            moments=section("moments"),
            output=section("output"),
            backend=config["backend"],
        script:
            "../scripts/moments.py"

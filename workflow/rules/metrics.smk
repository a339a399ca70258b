# Metrics: feature extraction for every test tracklet, then ranking (metrics.json) and the ablation tables.


rule extract_features:
    input:
        model=run_model,
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
        parsing=test_parsing,
    output:
        features=directory("results/{dataset}/{method}/features.zarr"),
    params:
        cfg=features_params,
        torch=TORCH_ARGS,
    log:
        "results/{dataset}/{method}/logs/extract_features.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        gpu=gpus_of(None),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.extract_features --model {input.model} --frames {input.frames} --index {input.index}"
        " --output {output.features} --parsing {input.parsing} --params {params.cfg:q} {params.torch}"
        " --log-file {log}"


rule rank:
    input:
        features=ranked_features,
        model=ranked_model,
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
    output:
        metrics="results/{dataset}/{method}/metrics.json",
        table=report(
            "results/{dataset}/{method}/metrics.html",
            caption="../report/metrics.rst",
            category="{dataset}",
            subcategory="{method}",
            labels={"data set": "{dataset}", "method": "{method}", "figure": "metrics"},
        ),
        cmc_csv="results/{dataset}/{method}/cmc.csv",
        per_query="results/{dataset}/{method}/per_query.parquet",
        cmc_png=report(
            "results/{dataset}/{method}/cmc.png",
            caption="../report/cmc.rst",
            category="{dataset}",
            subcategory="{method}",
            labels={"data set": "{dataset}", "method": "{method}", "figure": "CMC"},
        ),
        ranked_png=report(
            "results/{dataset}/{method}/ranked.png",
            caption="../report/ranked.rst",
            category="{dataset}",
            subcategory="{method}",
            labels={"data set": "{dataset}", "method": "{method}", "figure": "ranked lists"},
        ),
        training_png=report(
            "results/{dataset}/{method}/training.png",
            caption="../report/training.rst",
            category="{dataset}",
            subcategory="{method}",
            labels={"data set": "{dataset}", "method": "{method}", "figure": "training curves"},
        ),
    params:
        cfg=rank_params,
        torch=TORCH_ARGS,
    log:
        "results/{dataset}/{method}/logs/rank.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        mem_mb=4000,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.rank --features {input.features} --model {input.model} --frames {input.frames}"
        " --index {input.index}"
        " --output {output.metrics} --params {params.cfg:q} {params.torch} --log-file {log}"


rule ablation_table:
    input:
        metrics=ablation_metrics,
    output:
        csv="results/{dataset}/{table}_ablation.csv",
        md="results/{dataset}/{table}_ablation.md",
    params:
        rows=ablation_rows,
    log:
        "results/{dataset}/logs/{table}_ablation.log",
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.collect_metrics --metrics {input.metrics} --rows {params.rows:q} --csv {output.csv}"
        " --md {output.md} --log-file {log}"


# A target naming a data set or method that does not exist: one line naming it and the nearest, instead of
# Snakemake's "no rule to produce". Only this rule matches such a target; `ruleorder` sends the rest to rank.
rule unknown_target:
    wildcard_constraints:
        dataset="[^/]+",
        method="[^/]+",
    input:
        unknown_run,
    output:
        "results/{dataset}/{method}/metrics.json",
    log:
        "results/{dataset}/{method}/logs/unknown_target.log",
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "false"


ruleorder: rank > unknown_target

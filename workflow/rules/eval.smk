# Evaluation: feature extraction for every test tracklet, then ranking and metrics.


rule extract_features:
    input:
        model="results/{dataset}/{method}/model.pt",
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
        parsing=test_parsing,
    output:
        features=directory("results/{dataset}/{method}/features.zarr"),
    params:
        torch_threads=TORCH_THREADS,
        cfg=features_params,
        seed=config["seed"],
        device=config["device"],
    log:
        "results/{dataset}/{method}/logs/extract_features.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        gpu=1,
        mem_mb=8000,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.extract_features --model {input.model} --frames {input.frames} --index {input.index}"
        " --output {output.features} --parsing {input.parsing} --params {params.cfg:q} --seed {params.seed}"
        " --device {params.device}"
        " --torch-threads {params.torch_threads} --log-file {log}"


rule rank:
    input:
        features=ranked_features,
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
    params:
        torch_threads=TORCH_THREADS,
        cfg=rank_params,
        device=config["device"],
    log:
        "results/{dataset}/{method}/logs/rank.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        mem_mb=4000,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.rank --features {input.features} --frames {input.frames} --index {input.index}"
        " --output {output.metrics} --params {params.cfg:q} --device {params.device}"
        " --torch-threads {params.torch_threads} --log-file {log}"


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

# Part pseudo-labels in rounds (ISP): labels of round r come from model round r-1 (round 0 from
# the `rounds.init` method's model); model round r trains from model round r-1 on labels r.


rule pseudo_labels:
    input:
        model=previous_model,
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
    output:
        labels=directory("results/{dataset}/{method}/round{round}/pseudo_labels.zarr"),
    params:
        cfg=pseudo_label_params,
        torch=TORCH_ARGS,
    log:
        "results/{dataset}/{method}/logs/pseudo_labels_round{round}.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        gpu=gpus_of(None),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.pseudo_labels --model {input.model} --frames {input.frames} --index {input.index}"
        " --output {output.labels} --round {wildcards.round} --params {params.cfg:q} {params.torch}"
        " --log-file {log}"


rule train_round:
    input:
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
        labels="results/{dataset}/{method}/round{round}/pseudo_labels.zarr",
        init=previous_model,
    output:
        model="results/{dataset}/{method}/round{round}/model.pt",
    params:
        cfg=train_params,
        launch=launcher_of("train"),
        torch=TORCH_ARGS,
        checkpoint=round_checkpoint,
    log:
        "results/{dataset}/{method}/logs/train_round{round}.log",
    threads: torch_threads_of("train")
    resources:
        gpu=gpus_of("train"),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "{params.launch} -m stages.train --frames {input.frames} --index {input.index} --part-labels {input.labels}"
        " --init {input.init} --output {output.model} --checkpoint {params.checkpoint} --params {params.cfg:q}"
        " {params.torch} --log-file {log}"


rule last_round:
    wildcard_constraints:
        method="|".join(ROUND_METHODS) if ROUND_METHODS else "^$",
    input:
        last_round_model,
    output:
        "results/{dataset}/{method}/model.pt",
    log:
        "results/{dataset}/{method}/logs/last_round.log",
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "cp {input} {output} 2> {log}"

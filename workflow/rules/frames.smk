# Frames: the synthetic generator (data/<dataset>) and frame extraction into frames.zarr + index.parquet.


rule synthesize:
    output:
        directory("data/{dataset}"),
    wildcard_constraints:
        dataset="|".join(SYNTHETIC) if SYNTHETIC else "^$",
    params:
        layout=synth_layout,
        cfg=synth_params,
        seed=config["seed"],
    log:
        "results/{dataset}/logs/synthesize.log",
    threads: 2
    resources:
        mem_mb=2000,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.synthesize --layout {params.layout} --output {output} --params {params.cfg:q}"
        " --seed {params.seed} --workers {threads} --log-file {log}"


rule extract_frames:
    input:
        root=dataset_root,
    output:
        frames=directory("results/{dataset}/frames.zarr"),
        index="results/{dataset}/index.parquet",
    params:
        kind=dataset_kind,
        cfg=frames_params,
    log:
        "results/{dataset}/logs/extract_frames.log",
    threads: max_threads(4)
    resources:
        mem_mb=2000,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.extract_frames --kind {params.kind} --root {input.root} --frames {output.frames}"
        " --index {output.index} --params {params.cfg:q} --threads {threads} --log-file {log}"

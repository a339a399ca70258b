# Parsing stores: five-region label maps (background, head, upper body, lower body, shoes) of every
# frame, SPReID's parsing input, from the source a method names (`parsing.source`): the synthetic
# ground truth (oracle), a trained ISP / HCGA parser folded by height, or any parser's maps (external).


rule parse_frames:
    input:
        frames="results/{dataset}/frames.zarr",
        index="results/{dataset}/index.parquet",
        model=parser_model,
        maps=external_maps,
    output:
        parsing=directory("results/{dataset}/parsing/{source}.zarr"),
    params:
        cfg=parsing_params,
        torch=TORCH_ARGS,
    log:
        "results/{dataset}/logs/parse_frames_{source}.log",
    threads: max_threads(TORCH_THREADS)
    resources:
        gpu=parser_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "python -m stages.parse_frames --frames {input.frames} --index {input.index} --output {output.parsing}"
        " --model {input.model} --params {params.cfg:q} {params.torch} --log-file {log}"

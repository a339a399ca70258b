# Models: one training engine for every method; the method's model, losses and settings come from its config.


rule train:
    wildcard_constraints:
        method="|".join(PLAIN_METHODS) if PLAIN_METHODS else "^$",
    input:
        frames=train_frames,
        index=train_index,
        parsing=train_parsing,
        keypoints_root=keypoints_root,
        keypoints_csv=keypoints_file,
        segmenter=train_segmenter,
    output:
        model="results/{dataset}/{method}/model.pt",
    params:
        cfg=train_params,
        launch=launcher_of("train"),
        torch=TORCH_ARGS,
        checkpoint=checkpoint_path,
    log:
        "results/{dataset}/{method}/logs/train.log",
    threads: torch_threads_of("train")
    resources:
        gpu=gpus_of("train"),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "{params.launch} -m stages.train --frames {input.frames} --index {input.index} --output {output.model}"
        " --parsing {input.parsing} --keypoints-root {input.keypoints_root}"
        " --checkpoint {params.checkpoint} --params {params.cfg:q} {params.torch} --log-file {log}"

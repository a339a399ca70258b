# SS-HSP stage 1: the co-part segmenter learns body parts without labels by predicting frame t+1 of a
# training tracklet from frame t; it writes the part maps of every frame and, on synthetic data, their
# IoU against the ground truth next to a horizontal-stripe partition's. Stage 2 (train) fine-tunes it.


rule pretrain_segmentation:
    input:
        frames=train_frames,
        index=train_index,
    output:
        model="results/{dataset}/{method}/segmenter.pt",
        parsing=directory("results/{dataset}/{method}/parsing.zarr"),
        summary="results/{dataset}/{method}/segmentation.json",
    params:
        cfg=segmentation_params,
        launch=launcher_of("segmentation"),
        torch=TORCH_ARGS,
    log:
        "results/{dataset}/{method}/logs/pretrain_segmentation.log",
    threads: torch_threads_of("segmentation")
    resources:
        gpu=gpus_of("segmentation"),
        cpus_per_gpu=cpus_per_gpu,
        mem_mb=TORCH_MEM_MB,
        runtime=TORCH_RUNTIME,
    conda:
        "../../envs/hspreid.yaml"
    shell:
        "{params.launch} -m stages.pretrain_segmentation --frames {input.frames} --index {input.index}"
        " --params {params.cfg:q} --model-out {output.model} --parsing-out {output.parsing}"
        " --summary {output.summary} {params.torch} --log-file {log}"

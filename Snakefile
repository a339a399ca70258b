# hspreid: person re-identification guided by human semantic parsing, as a Snakemake DAG.
#
#   snakemake --cores 8 results/synth_mars/baseline/metrics.json
#
# data/<dataset> --extract_frames--> results/<dataset>/frames.zarr + index.parquet
#   --train--> results/<dataset>/<method>/model.pt --extract_features--> features.zarr
#   --rank--> metrics.json
# SPReID also reads results/<dataset>/parsing/<source>.zarr (parse_frames: five-region maps of every frame);
# SS-HSP first pre-trains its segmenter: results/<dataset>/<method>/segmenter.pt (pretrain_segmentation).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/segmenter.smk"
include: "workflow/rules/pseudo_labels.smk"
include: "workflow/rules/parsing_stores.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/metrics.smk"


rule all:
    default_target: True
    input:
        "results/synth_mars/baseline/metrics.json",

"""Part maps, the bottom layer every parsing-aware module shares: region codes and folding tables, label-map
resizing, stripe partitions and the scores of a partition against ground truth."""
from .grid import border_ring, resize_nearest, stripe_labels, stripe_rows
from .regions import (GROUND_TRUTH_NAMES, HEIGHT_BANDS, IGNORE, LIMB_NAMES, LIMB_TO_GROUND_TRUTH, LIP_TO_REGIONS,
                      REGION_NAMES, REGIONS, TABLES, check_height_bands, fold_parts_by_height, fold_probs_to_regions,
                      fold_to_regions, ground_truth_table, region_code, resolve_table)
from .scores import (RegionIoU, keypoint_error, label_fit, label_quality, many_to_one_iou, mean_layout,
                     part_centroids, part_iou, partition_scores, segmentation_quality)

__all__ = [
    "GROUND_TRUTH_NAMES", "HEIGHT_BANDS", "IGNORE", "LIMB_NAMES", "LIMB_TO_GROUND_TRUTH", "LIP_TO_REGIONS", "REGIONS",
    "REGION_NAMES", "TABLES", "RegionIoU", "border_ring", "check_height_bands", "fold_parts_by_height",
    "fold_probs_to_regions", "fold_to_regions", "ground_truth_table", "keypoint_error", "label_fit", "label_quality",
    "many_to_one_iou", "mean_layout", "part_centroids", "part_iou", "partition_scores", "region_code",
    "resize_nearest", "resolve_table", "segmentation_quality", "stripe_labels", "stripe_rows",
]

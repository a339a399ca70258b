"""ISP pseudo part labels: exact 1-D 2-means, masked batched k-means, per-identity cascaded clustering, part IoU."""
from .kmeans import batched_kmeans, kmeans_fit, kmeans_inertia, two_means_1d
from .metrics import label_quality, part_iou
from .pseudo_labels import cascaded_part_labels, identity_seed, label_identities, write_rows

__all__ = [
    "batched_kmeans",
    "cascaded_part_labels",
    "identity_seed",
    "kmeans_fit",
    "kmeans_inertia",
    "label_identities",
    "label_quality",
    "part_iou",
    "two_means_1d",
    "write_rows",
]

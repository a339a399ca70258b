"""ISP pseudo part labels: exact 1-D 2-means, masked batched k-means, per-identity cascaded clustering."""
from .kmeans import batched_kmeans, kmeans_fit, kmeans_inertia, two_means_1d
from .pseudo_labels import cascaded_part_labels, identity_seed, label_identities, write_rows

__all__ = [
    "batched_kmeans",
    "cascaded_part_labels",
    "identity_seed",
    "kmeans_fit",
    "kmeans_inertia",
    "label_identities",
    "two_means_1d",
    "write_rows",
]

"""Part pseudo labels per identity: ISP's cascaded k-means (exact 1-D 2-means, masked batched k-means) and
HCGA's co-parsing (per-identity decoders, CPLR), both streamed identity by identity and batched."""
from .coparse import coparse_identities, coparse_part_labels
from .identities import identity_seed, write_rows
from .kmeans import batched_kmeans, kmeans_fit, kmeans_inertia, two_means_1d
from .options import CoparseOptions, KMeansOptions, PseudoLabelConfig, pseudo_label_config
from .pseudo_labels import activation, cascaded_part_labels, label_identities

__all__ = [
    "CoparseOptions",
    "KMeansOptions",
    "PseudoLabelConfig",
    "activation",
    "batched_kmeans",
    "cascaded_part_labels",
    "coparse_identities",
    "coparse_part_labels",
    "identity_seed",
    "kmeans_fit",
    "kmeans_inertia",
    "label_identities",
    "pseudo_label_config",
    "two_means_1d",
    "write_rows",
]

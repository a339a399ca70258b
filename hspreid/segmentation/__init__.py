"""SS-HSP semantic segmentation network (Wu & Liu, JUSTC 2022, section 3.2), after Siarohin et al.'s
Motion-supervised Co-part Segmentation: parts and their per-part affine motion are learnt by predicting
the next frame of a tracklet.
"""
from .losses import (L1SSIMPyramidLoss, TPSTransform, VGGPerceptualLoss, build_reconstruction_loss,
                     concentration_loss, equivariance_loss, random_color, random_tps)
from .model import BackgroundMotion, CoPartSegmenter, frames_to_tensor, load_segmenter
from .motion import (affine_flow, background_visibility, combine_flows, coordinate_grid, inverse_2x2, part_flows,
                     warp)
from .predictor import FramePredictor
from .pretrain import (STAGE_MODEL_DEFAULTS, TRAIN_DEFAULTS, FramePairSampler, consecutive_pairs, pretrain_from_store,
                       pretrain_segmenter, save_checkpoint, split_params)
from .store import part_labels, segment_store, write_part_store
from .unet import SegmentationUNet

__all__ = [
    "STAGE_MODEL_DEFAULTS",
    "TRAIN_DEFAULTS",
    "BackgroundMotion",
    "CoPartSegmenter",
    "FramePairSampler",
    "FramePredictor",
    "L1SSIMPyramidLoss",
    "SegmentationUNet",
    "TPSTransform",
    "VGGPerceptualLoss",
    "affine_flow",
    "background_visibility",
    "build_reconstruction_loss",
    "combine_flows",
    "concentration_loss",
    "consecutive_pairs",
    "coordinate_grid",
    "equivariance_loss",
    "frames_to_tensor",
    "inverse_2x2",
    "load_segmenter",
    "part_flows",
    "part_labels",
    "pretrain_from_store",
    "pretrain_segmenter",
    "random_color",
    "random_tps",
    "save_checkpoint",
    "segment_store",
    "split_params",
    "warp",
    "write_part_store",
]

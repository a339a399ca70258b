import pytest
import torch

from hspreid.data.datasets import AugmentConfig, TrainClips
from hspreid.engine.trainer import TrainConfig, lr_factor, param_groups, train
from hspreid.errors import UserError
from hspreid.models import ReIDModel
from hspreid.runtime import seed_everything
from hspreid.losses import Criterion
from hspreid.models import build_model


def test_lr_warmup_then_step_decay():
    cfg = TrainConfig(warmup_epochs=10, warmup_factor=0.01, milestones=[40, 70], gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(5, cfg) == pytest.approx(0.01 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(40, cfg) == pytest.approx(0.1)
    assert lr_factor(70, cfg) == pytest.approx(0.01)


def _run(tiny_mars, epochs, checkpoint, resume_key="k", **options):
    seed_everything(0)
    cfg = TrainConfig(epochs=epochs, warmup_epochs=1, milestones=[9], num_ids=3, num_instances=2, num_frames=2,
                      num_workers=0, log_every=0, **options)
    data = TrainClips(tiny_mars["frames"], tiny_mars["index"], cfg.num_frames, AugmentConfig())
    model = build_model({"name": "baseline", "backbone": "resnet18"}, data.num_classes)
    hist = train(model, data, Criterion({"id": {}, "triplet": {}}), cfg, device=torch.device("cpu"), seed=0,
                 checkpoint=checkpoint, resume_key=resume_key)
    return model, hist


def test_interrupted_training_resumes_to_the_same_weights(tiny_mars, tmp_path):
    straight, hist = _run(tiny_mars, 2, tmp_path / "a.pt")
    assert [h["epoch"] for h in hist] == [1, 2] and all(h["loss"] > 0 for h in hist)
    _run(tiny_mars, 1, tmp_path / "b.pt")          # "killed" after epoch 1
    resumed, hist_b = _run(tiny_mars, 2, tmp_path / "b.pt")
    assert [h["epoch"] for h in hist_b] == [1, 2]
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_configuration_is_ignored(tiny_mars, tmp_path):
    _run(tiny_mars, 1, tmp_path / "c.pt", resume_key="old")
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    state["history"][0]["loss"] = -1.0  # marks the old run's history
    torch.save(state, tmp_path / "c.pt")
    _, hist = _run(tiny_mars, 1, tmp_path / "c.pt", resume_key="new")
    assert len(hist) == 1 and hist[0]["loss"] > 0  # trained again, not "already done"


def test_lr_mult_scales_a_submodule_and_zero_freezes_it(tiny_mars, tmp_path):
    before = {k: v.clone() for k, v in _run(tiny_mars, 0, tmp_path / "init.pt")[0].state_dict().items()}
    model, _ = _run(tiny_mars, 1, tmp_path / "m.pt", lr_mult={"trunk.4": 0.0, "neck": 0.5})
    after = model.state_dict()
    frozen = [k for k in after if k.startswith("trunk.4.")]
    assert any("running_mean" in k for k in frozen)                       # BatchNorm statistics stay too (eval mode)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["trunk.5.0.conv1.weight"], after["trunk.5.0.conv1.weight"])
    assert not any(p.requires_grad for p in model.trunk[4].parameters())
    groups = torch.load(tmp_path / "m.pt", weights_only=False)["optimizer"]["param_groups"]
    cfg = TrainConfig(warmup_epochs=1, milestones=[9])
    assert [(g["lr_mult"], g["lr"]) for g in groups] == pytest.approx([(1.0, cfg.lr * lr_factor(0, cfg)),
                                                                       (0.5, cfg.lr * 0.5 * lr_factor(0, cfg))])
    assert len(groups[1]["params"]) == sum(p.requires_grad for p in model.neck.parameters())


def test_lr_mult_names_must_be_submodules():
    model = torch.nn.Sequential()
    model.add_module("body", torch.nn.Linear(2, 2))
    model.switched_off = None                                           # a branch the configuration left out
    groups, frozen = param_groups(model, {"switched_off": 0.0})
    assert frozen == [] and [len(g["params"]) for g in groups] == [2]
    with pytest.raises(UserError, match=r"train.lr_mult: Sequential has no submodule 'head'; expected one of \['body'\]"):
        param_groups(model, {"head": 0.1})
    with pytest.raises(UserError, match="train.lr_mult.body: expected a multiplier >= 0"):
        param_groups(model, {"body": -1.0})


class Recorder(ReIDModel):
    """Takes parsing maps and key points (as SPReID / SSN3D do) and records what each call received."""

    extra_inputs = ("parsing", "keypoints", "never_in_a_batch")

    def __init__(self, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(1, num_classes)
        self.calls = []

    def forward(self, clips, parsing=None, keypoints=None, never_in_a_batch=None):
        self.calls.append({"clips": tuple(clips.shape), "parsing": parsing, "keypoints": keypoints,
                           "never": never_in_a_batch})
        feat = clips.float().mean(dim=(1, 2, 3, 4))[:, None] / 255
        return {"features": {"global": feat}, "logits": {"global": self.fc(feat)}, "embedding": {"global": feat}}


def test_trainer_passes_the_model_its_extra_inputs(tiny_mars, tmp_path):
    import numpy as np
    import zarr

    from hspreid.data.keypoints import Keypoints

    n = len(tiny_mars["index"])
    group = zarr.open_group(str(tmp_path / "parsing.zarr"), mode="w")
    group.create_array("rows", data=np.arange(n))
    group.create_array("labels", data=np.full((n, 8, 4), 2, np.uint8))    # coarser than the frames
    rows = np.flatnonzero(tiny_mars["index"]["subset"].to_numpy() == "train")[::3]
    keypoints = Keypoints(rows, np.full((len(rows), 2, 3), 0.5), ["a", "b"])
    cfg = TrainConfig(epochs=1, warmup_epochs=0, num_ids=3, num_instances=2, num_frames=2, num_workers=0, log_every=0)
    data = TrainClips(tiny_mars["frames"], tiny_mars["index"], 2, AugmentConfig(), parsing=tmp_path / "parsing.zarr",
                      keypoints=keypoints)
    model = Recorder(data.num_classes)
    train(model, data, Criterion({"id": {}}), cfg, device=torch.device("cpu"), seed=0, checkpoint=tmp_path / "c.pt")
    assert model.calls and all(c["never"] is None for c in model.calls)
    for call in model.calls:
        b, t, _, h, w = call["clips"]
        assert call["parsing"].shape == (b, t, h, w) and call["parsing"].dtype == torch.uint8
        assert set(call["parsing"].unique().tolist()) <= {0, 2}              # moved maps: region 2 or padding
        assert call["keypoints"].shape == (b, t, 2, 3)
    labelled = torch.cat([c["keypoints"][..., 2].flatten() for c in model.calls])
    assert (labelled > 0).any() and labelled.isnan().any()                  # a few labelled frames, the rest NaN

import pytest

from hspreid.engine.trainer import TrainConfig, lr_factor


def test_lr_warmup_then_step_decay():
    cfg = TrainConfig(warmup_epochs=10, warmup_factor=0.01, milestones=[40, 70], gamma=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(5, cfg) == pytest.approx(0.01 * 0.5 + 0.5)
    assert lr_factor(10, cfg) == 1.0
    assert lr_factor(40, cfg) == pytest.approx(0.1)
    assert lr_factor(70, cfg) == pytest.approx(0.01)

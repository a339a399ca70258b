import pytest

from hspreid.errors import UserError
from hspreid.reporting import metrics_table


def _metrics(method, rank1, rounds=(), parsing=None):
    return {"method": method, "rank1": rank1, "rank5": 0.9, "rank10": 0.95, "mAP": 0.5, "mINP": 0.2,
            "rounds": list(rounds), "parsing_iou": parsing}


def test_metrics_table_rows_in_order_with_last_round_iou():
    rounds = [{"round": 0, "pseudo_label_iou": {"mean_part_iou": 0.2, "foreground_iou": 0.6}},
              {"round": 1, "pseudo_label_iou": {"mean_part_iou": 0.4, "foreground_iou": 0.7}}]
    table = metrics_table([_metrics("b", 0.5), _metrics("a", 0.25, rounds, {"mean_part_iou": 0.3, "foreground_iou": 0.8,
                                                                    "many_to_one_iou": 0.5})],
                          {"a": "row A", "b": "row B"})
    assert table["row"].tolist() == ["row B", "row A"]
    assert table.loc[1, "rank1"] == 25.0 and table.loc[1, "label part IoU"] == pytest.approx(40.0)
    assert table.loc[1, "parsing fg IoU"] == pytest.approx(80.0) and table["label part IoU"].isna()[0]
    assert table.loc[1, "parsing many-to-one IoU"] == 50.0
    assert "segmenter part IoU" not in table.columns                      # empty in every row
    seg = {**_metrics("s", 0.3), "segmentation": {"mean_part_iou": 0.25, "stripes_mean_part_iou": 0.125}}
    table = metrics_table([_metrics("b", 0.5), seg], {"b": "Basel.", "s": "SS-HSP"})
    assert table.loc[1, "segmenter part IoU"] == pytest.approx(25.0) and table.loc[1, "stripes part IoU"] == 12.5
    assert "label part IoU" not in table.columns
    with pytest.raises(UserError, match="no row label"):
        metrics_table([_metrics("c", 0.1)], {"a": "row A"})

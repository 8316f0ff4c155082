"""The report shows every method per box source, the leakage sentence, and writes its figures."""

import json

import numpy as np

from lib.evaluation.report import PanelRow, leakage_sentence, panel_figure, write_report
from lib.evaluation.results import aggregate, method_key


def _fold(k, rng):
    labels = [False] * 6 + [True] * 3
    methods = {}
    for method, metric, box in (("loris", "msgmsd", "gt"), ("loris", "msgmsd", "uniform"),
                                ("box-shape", None, "gt"), ("box-shape", None, "uniform")):
        key = method_key(method, metric, box)
        scores = rng.random(9).tolist()
        methods[key] = {"method": method, "metric": metric, "box": box, "i_auroc": 0.5 + 0.1 * k,
                        "p_auroc": None if method == "box-shape" else 0.9, "dice": None, "dice_calibrated": 0.2,
                        "sensitivity": 1.0, "specificity": 0.5, "scores": scores, "labels": labels}
    return {"index": k, "methods": methods}


def test_keys_name_method_metric_and_non_annotated_boxes():
    assert method_key("loris", "msgmsd") == "loris+msgmsd"
    assert method_key("loris", "dd", "uniform") == "loris+dd@uniform"
    assert method_key("box-shape", None) == "box-shape"
    assert method_key("box-intensity", None, "detected") == "box-intensity@detected"


def test_aggregate_and_report_files(tmp_path):
    rng = np.random.default_rng(0)
    folds = [_fold(0, rng), _fold(1, rng)]
    results = aggregate(folds)
    assert results["methods"]["box-shape"]["i_auroc"]["folds"] == [0.5, 0.6]
    assert results["methods"]["box-shape"]["p_auroc"]["mean"] is None
    results["config"] = {"boxes": ["gt", "uniform"], "folds": 2}
    json.dumps(results)  # JSON-ready
    report = write_report(tmp_path, results, folds, dataset_text="9 images")
    text = report.read_text()
    assert "Table 1" in text and "loris + msgmsd" in text and "box-shape" in text
    assert "I-AUROC annotated (gt)" in text and "I-AUROC uniform" in text
    assert (tmp_path / "figures" / "roc_loris_msgmsd_uniform.png").stat().st_size > 1000
    assert (tmp_path / "figures" / "roc_all_gt.png").exists()


def test_leakage_sentence_says_how_much_the_box_gives_away():
    results = {"methods": {"box-shape": {"i_auroc": {"mean": 0.98, "std": 0.01}},
                           "box-shape@uniform": {"i_auroc": {"mean": 0.5, "std": 0.0}}}}
    sentence = leakage_sentence(results)
    assert "almost all" in sentence and "0.980" in sentence and "0.500 with uniform" in sentence


def test_panel_figure_draws_rows_with_and_without_maps(tmp_path):
    image = np.full((32, 40), 0.7, np.float32)
    truth = np.zeros((32, 40), bool)
    truth[10:14, 5:20] = True
    rows = [PanelRow("a", "distended", image, (4, 8, 22, 16), image, image, np.random.rand(32, 40), truth, truth, 0.4, True),
            PanelRow("b", "normal", image, (4, 8, 22, 16), None, None, None, None, np.zeros_like(truth), 0.1, False)]
    panel_figure(tmp_path / "p.png", "test", rows)
    assert (tmp_path / "p.png").stat().st_size > 1000

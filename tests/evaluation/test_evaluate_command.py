"""``python -m lib evaluate`` end to end on a tiny generated dataset: metrics.json, report, resume."""

import json

import pytest

from lib.__main__ import main
from lib.evaluation.results import METRIC_NAMES


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "data"
    assert main(["sample-data", "--out", str(out), "--patients", "8", "--image-size", "128x96"]) == 0
    return out


def _evaluate(data, out, *extra):
    return main(["evaluate", "--data", str(data), "--out", str(out), "--folds", "2", "--epochs", "1", "--quick",
                 "--image-size", "64", "--metrics", "msgmsd", "dd", "--threads", "1", "--no-progress", *extra])


def test_evaluate_writes_metrics_and_report_for_annotated_and_uniform_boxes(tiny_data, tmp_path):
    out = tmp_path / "eval"
    # autoencoder runs through the same path as riad (another core mode); left out to keep the test short
    methods = ("--methods", "loris", "riad", "box-intensity", "box-shape")
    assert _evaluate(tiny_data, out, "--box", "gt", "uniform", *methods) == 0
    results = json.loads((out / "metrics.json").read_text())
    assert set(results) >= {"methods", "config", "dataset", "uniform_box"}
    expected = {"loris+msgmsd", "loris+dd", "riad+msgmsd", "riad+dd", "box-intensity", "box-shape"}
    expected |= {f"{key}@uniform" for key in expected}
    assert set(results["methods"]) == expected
    for key, entry in results["methods"].items():
        assert set(METRIC_NAMES) <= set(entry), key
        for name in METRIC_NAMES:
            assert set(entry[name]) == {"mean", "std", "folds"} and len(entry[name]["folds"]) == 2, (key, name)
        assert entry["box"] == ("uniform" if key.endswith("@uniform") else "gt")
    shape = results["methods"]["box-shape"]
    assert 0.0 <= shape["i_auroc"]["mean"] <= 1.0
    assert shape["p_auroc"]["mean"] is None  # no image, no map
    # one box size for everyone: the box shape cannot rank the images
    assert results["methods"]["box-shape@uniform"]["i_auroc"]["mean"] == pytest.approx(0.5, abs=0.15)
    assert results["dataset"]["box_shape_auroc"] is not None
    assert results["config"]["boxes"] == ["gt", "uniform"]
    report = (out / "report.md").read_text()
    assert "Table 1" in report and "box-shape" in report and "uniform" in report
    for name in ("figures/roc_loris_msgmsd.png", "figures/roc_box-shape_uniform.png", "panels/loris_dd.png",
                 "panels/loris_msgmsd_uniform.png", "panels/box-intensity.png", "folds/fold_0.json", "folds/fold_1.json"):
        assert (out / name).stat().st_size > 0, name

    # the corrected metrics: whole-image Dice beside the in-box one, box shares, the scoring ablation
    for key in ("loris+msgmsd", "loris+dd", "riad+msgmsd", "riad+dd@uniform"):
        entry = results["methods"][key]
        assert entry["dice"]["mean"] is not None and entry["dice_in_box"]["mean"] is not None, key
        for share in ("normal_box_share", "distended_box_share"):
            assert 0.0 <= entry[share]["mean"] <= 1.0, (key, share)
        assert set(results["scoring"][key]) == {"mean/box", "max/box", "mean/image", "max/image"}, key
    loris, riad = results["methods"]["loris+msgmsd"], results["methods"]["riad+msgmsd"]
    assert (loris["pooling"], loris["score_region"], loris["dice_calibrated_region"]) == ("mean", "box", "box")
    assert (riad["pooling"], riad["score_region"], riad["dice_calibrated_region"]) == ("max", "image", "image")
    assert "Scoring ablation" in report and "Dice in box" in report

    # every test image of a fold, with its label, boxes and scores, and the model folders used
    fold = json.loads((out / "folds" / "fold_0.json").read_text())
    assert sorted(i["image"] for i in fold["images"]) == sorted(fold["test_images"])
    image = fold["images"][0]
    assert image["label"] in ("normal", "distended") and image["patient_id"]
    assert image["boxes"]["gt"]["source"] == "annotated" and len(image["boxes"]["uniform"]["box"]) == 4
    assert set(image["scores"]) == set(fold["methods"])
    assert image["scores"]["loris+dd"] == fold["methods"]["loris+dd"]["scores"][
        fold["methods"]["loris+dd"]["images"].index(image["image"])]
    assert {"loris@gt", "loris@uniform", "riad@gt"} <= set(fold["models"])
    assert (tmp_path / "eval" / "models" / "fold_0" / "loris_gt" / "model.pt").is_file()

    # --resume: both folds are finished, nothing is trained again and the numbers stay the same
    before = {p: p.stat().st_mtime_ns for p in (out / "models").rglob("model.pt")}
    assert _evaluate(tiny_data, out, "--box", "gt", "uniform", *methods, "--resume") == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["methods"] == results["methods"]
    assert {p: p.stat().st_mtime_ns for p in (out / "models").rglob("model.pt")} == before


def test_resume_with_other_options_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert _evaluate(tiny_data, out, "--methods", "box-shape") == 0
    assert _evaluate(tiny_data, out, "--methods", "box-intensity", "--resume") == 2
    assert "another configuration" in capsys.readouterr().err


def test_unknown_method_is_a_clear_error(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _evaluate(tiny_data, tmp_path / "x", "--methods", "patchcore")
    assert "invalid choice" in capsys.readouterr().err


def test_detected_boxes_come_from_a_detector_per_fold(tiny_data, tmp_path):
    out = tmp_path / "eval"
    assert _evaluate(tiny_data, out, "--methods", "box-shape", "--box", "gt", "detected", "--detector-image-size", "64",
                     "--detector-epochs", "1") == 0
    results = json.loads((out / "metrics.json").read_text())
    assert {"box-shape", "box-shape@detected"} <= set(results["methods"])
    for name in ("precision50", "map50", "map75", "mean_iou"):
        assert len(results["detector"][name]["folds"]) == 2
    assert len(results["detector"]["missed"]) == 2
    assert (out / "models" / "fold_1" / "detector").is_dir()
    fold = json.loads((out / "folds" / "fold_1.json").read_text())
    assert fold["models"]["detector"].endswith("detector")
    detected = [i["boxes"]["detected"] for i in fold["images"]]
    for d in detected:  # the server's policy: a box above the detector's confidence floor, or no answer
        assert (d["source"], len(d["box"]), d["confidence"] > 0) == ("detector", 4, True) if d["box"] else \
            (d["source"], d["confidence"]) == ("none (no answer)", None)
    assert fold["methods"]["box-shape@detected"]["answered"] == sum(d["box"] is not None for d in detected)
    assert fold["detector"]["box_policy"] == "fail"

    # another policy is labelled: every image gets a box (the whole image where the detector finds none)
    other = tmp_path / "whole"
    assert _evaluate(tiny_data, other, "--methods", "box-shape", "--box", "detected", "--detector-image-size", "64",
                     "--box-policy", "whole_image") == 0
    fold = json.loads((other / "folds" / "fold_1.json").read_text())
    assert fold["detector"]["box_policy"] == "whole_image"
    assert all(i["boxes"]["detected"]["source"] in ("detector", "whole_image") for i in fold["images"])
    assert "whole_image" in (other / "report.md").read_text()
    assert "Table 2" in (out / "report.md").read_text()


def test_the_detected_box_record_is_what_the_infer_command_gives_with_that_folds_models(tiny_data, tmp_path):
    # one pipeline: the evaluation's --box detected record (box and LoRIS score) of a test image is what a user
    # gets from `python -m lib infer --model M --detector D --image I` with the fold's models (the decision is
    # not compared: the evaluation recalibrates the thresholds on detected validation boxes)
    out = tmp_path / "eval"
    assert _evaluate(tiny_data, out, "--methods", "loris", "--box", "detected", "--detector-image-size", "64",
                     "--detector-epochs", "1") == 0
    fold = json.loads((out / "folds" / "fold_0.json").read_text())
    model, detector = fold["models"]["loris@gt"], fold["models"]["detector"]
    assert detector == str(out / "models" / "fold_0" / "detector")
    record = next(i for i in fold["images"] if i["boxes"]["detected"]["box"] is not None)
    assert main(["infer", "--model", model, "--detector", detector, "--image",
                 str(tiny_data / "images" / f"{record['image']}.png"), "--out", str(tmp_path / "infer")]) == 0
    result = json.loads((tmp_path / "infer" / "result.json").read_text())
    detected = record["boxes"]["detected"]
    assert (result["box"], result["box_source"]) == (detected["box"], "detector")
    assert result["detector_confidence"] == pytest.approx(detected["confidence"], abs=1e-6)  # a batch of 1 vs many
    assert result["metric"] == "msgmsd"
    assert result["score"] == pytest.approx(record["scores"]["loris+msgmsd@detected"], rel=1e-6)


def test_report_only_rebuilds_the_report_of_a_finished_run(tiny_data, tmp_path):
    out = tmp_path / "eval"
    assert _evaluate(tiny_data, out, "--methods", "box-shape") == 0
    (out / "report.md").unlink()
    assert main(["evaluate", "--out", str(out), "--report-only"]) == 0
    assert "box-shape" in (out / "report.md").read_text()

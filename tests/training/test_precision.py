"""Mixed precision: the choices each device takes, and bf16 (the one the CPU runs) within tolerance of float32."""

import pytest
import torch

from lib.errors import DataError
from lib.training.precision import PRECISIONS, TOLERANCE, Precision, check_precision, compare


def test_precisions_a_device_cannot_run_are_refused_by_name():
    cpu = torch.device("cpu")
    assert [check_precision(p, cpu) for p in ("float32", "bf16")] == ["float32", "bf16"]
    with pytest.raises(DataError, match="fp16 needs a CUDA device"):
        check_precision("fp16", cpu)
    with pytest.raises(DataError, match="expected one of float32, bf16, fp16"):
        check_precision("half", cpu)
    assert PRECISIONS == ("float32", "bf16", "fp16")


def test_float32_steps_exactly_as_plain_pytorch():
    def run(use_precision):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        amp = Precision("float32", torch.device("cpu"))
        for _ in range(3):
            with amp.autocast():
                loss = (net(x) - x).pow(2).mean()
            opt.zero_grad()
            if use_precision:
                amp.step(loss, opt)
            else:
                loss.backward()
                opt.step()
        return [p.detach().clone() for p in net.parameters()], amp.stateful()

    (a, state), (b, _) = run(True), run(False)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and state == {}


def test_compare_measures_against_the_tolerance():
    ref = {"reconstruction": torch.zeros(2, 1, 4, 4), "scores": {"dd": torch.tensor([0.0, 1.0])}}
    near = {"reconstruction": torch.full((2, 1, 4, 4), 0.01), "scores": {"dd": torch.tensor([0.02, 1.0])}}
    far = {"reconstruction": torch.full((2, 1, 4, 4), 0.01), "scores": {"dd": torch.tensor([0.2, 1.0])}}
    out = compare(ref, near)
    assert out["reconstruction_max_abs"] == pytest.approx(0.01) and out["score_rel"]["dd"] == pytest.approx(0.02)
    assert out["within_tolerance"] and not compare(ref, far)["within_tolerance"]
    assert TOLERANCE == {"reconstruction_max_abs": 0.05, "score_rel": 0.05}


@pytest.mark.slow
def test_bf16_training_and_inference_stay_within_tolerance_of_float32(tiny_flat, tmp_path):
    from lib.data.dataset import load_dataset
    from lib.data.imageio import read_boxed_images
    from lib.loris.predictor import LorisPredictor
    from lib.loris.settings import LorisSettings
    from lib.loris.train import train

    records = load_dataset(tiny_flat).records
    settings = LorisSettings.quick(image_size=32, channels=(8, 16, 32), strides=(2, 2), max_epochs=2)
    summary = train(records, tmp_path / "bf16", settings, progress=False, device="cpu", precision="bf16")
    assert summary["precision"] == "bf16" and summary["epochs_run"] == 2
    reference = train(records, tmp_path / "f32", settings, progress=False, device="cpu")
    # the same seed: the training losses follow float32's closely
    for ours, theirs in zip(summary["history"], reference["history"]):
        assert ours["train"]["loss"] == pytest.approx(theirs["train"]["loss"], rel=0.05)

    boxed = [r for r in records if r.box is not None]
    images, boxes = read_boxed_images(boxed), [r.box for r in boxed]
    outputs = {p: LorisPredictor.load(tmp_path / "f32", precision=p).network_outputs(images, boxes, ("msgmsd", "dd"))
               for p in ("float32", "bf16")}
    result = compare(*({"reconstruction": o.reconstruction, "scores": o.scores} for o in outputs.values()))
    assert result["within_tolerance"], result
    assert outputs["bf16"].reconstruction.dtype == torch.float32  # maps and scores in float32

"""The pinned environment imports what every part of the project needs."""

import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "torch",
        "torchvision",
        "monai",
        "monai.apps.detection.networks.retinanet_detector",
        "monailabel.interfaces.app",
        "pydicom_seg",
        "SimpleITK",
        "nibabel",
        "sklearn.metrics",
        "scipy.ndimage",
    ],
)
def test_module_imports(module):
    importlib.import_module(module)


def test_torchvision_nms_operator_is_registered():
    # The failure mode of a mismatched torch/torchvision pair: "operator torchvision::nms does not exist".
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_lib_is_not_installed_in_site_packages():
    # MONAI Label imports the app's own `lib` by path; an installed `lib` would shadow other apps'.
    import lib

    assert "site-packages" not in lib.__file__


def test_cli_help_lists_every_command():
    import subprocess
    import sys

    from lib.__main__ import COMMANDS

    out = subprocess.run([sys.executable, "-m", "lib", "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", ["sample-data", "import", "train", "infer", "train-detector", "detect", "evaluate", "bench"])
def test_every_command_has_help(command, capsys):
    from lib.__main__ import COMMANDS, main

    assert command in COMMANDS
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m lib {command}")

"""Every Slicer name the module's code spells out exists in Slicer's core libraries (slicer-core).

A static companion to ``tests/slicer_module/test_module_structure.py``: the attribute chains
``slicer.<class or function>[.<member>]`` written in ``LoRIS.py`` and ``LoRISLib`` are looked
up in the real ``slicer`` package. Names that only Slicer's application provides (Qt, the
scripted-module base classes, ``slicer.app``) are listed in ``APPLICATION_ONLY`` and checked
by reading Slicer's source instead (``slicer_module/README.md``).
"""

import ast
from pathlib import Path

import pytest

import slicer
import slicer.util

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "LoRIS"
SOURCES = [MODULE_DIR / "LoRIS.py"] + sorted((MODULE_DIR / "LoRISLib").glob("*.py"))
# provided by Slicer's application, not by its core libraries
APPLICATION_ONLY = {"app", "modules", "mrmlScene", "i18n", "parameterNodeWrapper", "ScriptedLoadableModule"}
APPLICATION_ONLY_UTIL = set()  # every slicer.util function the module uses ships in slicer-core's util.py


def _chains(path):
    """``(first, second)`` for every ``slicer.first`` and ``slicer.first.second`` in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
            found.add((node.attr, None))
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and isinstance(node.value.value, ast.Name) and node.value.value.id == "slicer"):
            found.add((node.value.attr, node.attr))
    return found


def _from_imports(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in ("slicer", "slicer.util"):
            names |= {(node.module, alias.name) for alias in node.names}
    return names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_every_slicer_name_in_the_code_exists_in_slicer_core(path):
    missing = []
    for first, second in sorted(_chains(path), key=str):
        if first in APPLICATION_ONLY:
            continue
        if not hasattr(slicer, first):
            missing.append(f"slicer.{first}")
        elif second is not None and not hasattr(getattr(slicer, first), second):
            missing.append(f"slicer.{first}.{second}")
    for module, name in sorted(_from_imports(path)):
        if module == "slicer" and name in APPLICATION_ONLY:
            continue
        target = slicer if module == "slicer" else slicer.util
        if not hasattr(target, name):
            missing.append(f"from {module} import {name}")
    assert not missing, f"{path.name} uses names Slicer's core libraries do not have: {missing}"


def test_the_check_sees_the_names_the_module_relies_on():
    chains = set().union(*(_chains(p) for p in SOURCES))
    for expected in [("vtkMRMLLayoutNode", "SlicerLayoutOneUpRedSliceView"), ("vtkSegmentation", "SegmentModified"),
                     ("vtkSlicerColorLogic", "AddDefaultColorLegendDisplayNode"), ("util", "arrayFromVolume"),
                     ("util", "updateSegmentBinaryLabelmapFromArray"), ("util", "confirmYesNoDisplay")]:
        assert expected in chains

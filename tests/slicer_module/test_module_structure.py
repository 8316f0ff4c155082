"""Static checks of the Slicer module that need no Slicer.

- ``LoRIS.py`` imports only what 3D Slicer's Python provides: slicer, vtk, qt,
  ctk, numpy (bundled with Slicer), the standard library, and its own ``LoRISLib``.
- ``LoRISLib`` imports only the standard library (plus itself), except ``scene`` and
  ``review``, which add Slicer's core libraries (slicer, vtk, numpy) and never Qt.
- Every widget the code touches (``self.ui.<name>``) exists in ``LoRIS.ui``, and
  every ``SlicerParameterName`` there is a field of the parameter node.
"""

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_module" / "LoRIS"
MODULE_FILE = MODULE_DIR / "LoRIS.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "LoRIS.ui"
SLICER_PROVIDED = {"slicer", "vtk", "qt", "ctk", "numpy", "LoRISLib"}


def _top_level_imports(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                continue
            names.add(node.module.split(".")[0])
    return names


def test_module_imports_only_what_slicer_provides():
    imports = _top_level_imports(MODULE_FILE)
    foreign = {name for name in imports if name not in SLICER_PROVIDED and name not in sys.stdlib_module_names}
    assert not foreign, f"LoRIS.py imports modules Slicer does not provide: {sorted(foreign)}"
    assert {"slicer", "LoRISLib"} <= imports
    assert not imports & {"monailabel", "requests", "lib", "torch", "PIL", "SimpleITK"}


MRML_MODULES = {"scene.py", "review.py"}  # need Slicer's core libraries (tested on slicer-core), never Qt


@pytest.mark.parametrize("path", sorted((MODULE_DIR / "LoRISLib").glob("*.py")), ids=lambda p: p.name)
def test_library_needs_no_qt_and_most_of_it_only_the_standard_library(path):
    allowed = {"LoRISLib"} | ({"slicer", "vtk", "numpy"} if path.name in MRML_MODULES else set())
    foreign = {n for n in _top_level_imports(path) if n not in sys.stdlib_module_names and n not in allowed}
    assert not foreign, f"{path.name} imports {sorted(foreign)}; allowed besides the standard library: {sorted(allowed)}"


def _ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    params = {}
    for name, w in widgets.items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                params[name] = prop.find("string").text
    return widgets, params


def _parameter_node_fields():
    tree = ast.parse(MODULE_FILE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LoRISParameterNode")
    return {stmt.target.id for stmt in cls.body if isinstance(stmt, ast.AnnAssign)}


def test_every_widget_the_code_uses_exists_in_the_ui_file():
    widgets, _ = _ui_widgets()
    tree = ast.parse(MODULE_FILE.read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert used, "no self.ui.<widget> use found"
    missing = used - set(widgets)
    assert not missing, f"LoRIS.py uses widgets missing from LoRIS.ui: {sorted(missing)}"


def test_ui_parameter_names_are_parameter_node_fields():
    _, params = _ui_widgets()
    fields = _parameter_node_fields()
    assert params, "no SlicerParameterName in LoRIS.ui"
    unknown = {w: p for w, p in params.items() if p not in fields}
    assert not unknown, f"SlicerParameterName values that are not LoRISParameterNode fields: {unknown}"
    assert {"serverUrl", "strategy", "inputVolume", "overlayOpacity", "labelClass", "trainModel"} <= set(params.values())


def test_module_files_are_listed_in_cmake():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in sorted((MODULE_DIR / "LoRISLib").glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, f"{path.name} missing from CMakeLists.txt"
    assert (MODULE_DIR / "Resources" / "Icons" / "LoRIS.png").is_file()


@pytest.mark.parametrize(
    "path", [MODULE_FILE] + sorted((MODULE_DIR / "LoRISLib").glob("*.py")), ids=lambda p: p.name
)
def test_sources_parse_as_python_3_9(path):
    # Slicer 5.6 and 5.8 ship Python 3.9
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))

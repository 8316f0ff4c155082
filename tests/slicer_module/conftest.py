"""Put the Slicer module's folder on sys.path so tests import ``LoRISLib`` as Slicer does.

``scene/`` holds the tests that need Slicer's core libraries (the ``slicer-core`` wheel,
which pins its own VTK): they run in their own environment (``make test`` creates
``.venv-slicer`` and runs them there), so the server's environment does not collect them.
"""

import importlib.util
import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_module" / "LoRIS"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

collect_ignore = [] if importlib.util.find_spec("slicer_core") else ["scene"]

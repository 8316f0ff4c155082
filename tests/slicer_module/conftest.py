"""Put the Slicer module's folder on sys.path so tests import ``LoRISLib`` as Slicer does."""

import sys
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer_module" / "LoRIS"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

"""LoRIS for MONAI Label and 3D Slicer.

``lib`` is the code of the MONAI Label app: the method core (``lib.loris``),
data formats (``lib.data``), the recess detector (``lib.detection``), the
evaluation protocol (``lib.evaluation``) and the MONAI Label task layer
(``lib.configs``, ``lib.infers``, ``lib.trainers``, ``lib.activelearning``).
It is imported by path (MONAI Label adds the app folder to ``sys.path``), never
installed into site-packages.
"""

__version__ = "0.1.0"

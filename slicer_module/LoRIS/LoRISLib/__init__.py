"""The LoRIS module's code that needs no Qt.

Standard library only (3D Slicer's Python guarantees nothing else), tested in the
server's environment:

- ``client``: HTTP client of the LoRIS MONAI Label app (urllib, multipart, API token,
  no system proxy, cancellable).
- ``geometry``: image pixel box <-> markups ROI center/size in RAS.
- ``results``: typed results parsed from the app's JSON answers.
- ``worker``: server calls on a background thread, results handed to the main thread.

MRML, VTK and numpy (what Slicer's core libraries provide), tested on the
``slicer-core`` wheel:

- ``scene``: frames, box, segmentation, anomaly map and views in Slicer's scene.
- ``review``: the module's actions: scene inputs, HTTP on the worker, answers applied to the scene.
"""

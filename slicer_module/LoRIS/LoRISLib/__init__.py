"""Slicer-free code of the LoRIS Slicer module.

Standard library only (3D Slicer's Python guarantees nothing else), so every
module here runs and is tested outside Slicer:

- ``client``: HTTP client of the LoRIS MONAI Label app (urllib, multipart).
- ``geometry``: image pixel box <-> markups ROI center/size in RAS.
- ``results``: typed results parsed from the app's JSON answers.
- ``pngfile``: minimal PNG encoder/decoder for label masks.
- ``nrrdfile``: minimal NRRD reader for the float anomaly map.
"""

"""Data: image I/O, the dataset layouts (flat, reference, MONAI Label datastore), splits."""

"""The recess box detector (monai.apps.detection RetinaNet), trained on normal images only."""

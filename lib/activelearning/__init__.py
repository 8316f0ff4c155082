"""Active learning strategies and the scoring method of the MONAI Label app."""

"""MONAI Label task configurations (TaskConfig), one module per model."""

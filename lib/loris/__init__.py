"""The LoRIS method: single-mask inpainting, anomaly maps, scores, segmentation, training, calibration."""

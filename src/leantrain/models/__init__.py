"""Model loading: offline pretrained models and small random models built from configs."""

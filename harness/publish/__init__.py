"""Publishing a verified artifact: object storage and the model registry."""

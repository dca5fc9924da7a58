"""FastAPI inference service over re-parameterised ONNX artifacts (no torch)."""

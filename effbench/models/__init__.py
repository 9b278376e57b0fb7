"""Model sources (onnx file, torch factory, builtin zoo), their input specs and datasets."""

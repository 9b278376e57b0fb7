"""The names of the standard architectures (`effbench.models.standard`), importable without torch."""
STANDARD_NAMES = ("resnet50", "mobilenet-v2", "mobilenet-v1", "resnet8")

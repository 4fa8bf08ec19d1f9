"""BERT -> ONNX export (offline, torch) and ONNX Runtime text/sequence encoders (no torch at run time)."""

__all__: list[str] = []

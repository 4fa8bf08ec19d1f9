"""BERT -> ONNX export (offline, torch) and ONNX Runtime text/sequence encoders (no torch at run time).

Run-time imports here never pull torch or transformers; `encoders.export` and
`encoders.torch_reference` do, and need the `train` extra.
"""

from encoders.catalog import CatalogReport, encode_catalog, load_catalog_vectors
from encoders.manifest import EncoderManifest
from encoders.sequence import SequenceEncoder
from encoders.session import EncoderError, SessionConfig, create_session
from encoders.text import TextEncoder

__all__ = [
    "CatalogReport",
    "EncoderError",
    "EncoderManifest",
    "SequenceEncoder",
    "SessionConfig",
    "TextEncoder",
    "create_session",
    "encode_catalog",
    "load_catalog_vectors",
]

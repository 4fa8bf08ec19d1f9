"""BERT -> ONNX export (offline) and ONNX Runtime text/sequence encoders (no torch at run time).

Export builds the graph from a folder's safetensors with numpy + onnx (`encoders.onnx_build`, the
runtime install), or traces it with torch (`encoders.bert_graph`, the `train` extra; the reference
the parity tests compare against, and the path for `.bin`-only folders). Run-time imports here
never pull torch or transformers; `encoders.bert_graph` and `encoders.torch_reference` do.
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

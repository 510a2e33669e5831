"""What is on the wire: Avro schemas (``avro/*.avsc``) and the codec for both framings."""

from schemas.codec import Decoder, Encoder
from schemas.errors import DecodeError, SchemaError
from schemas.store import SchemaStore, default_store

__all__ = ["Decoder", "DecodeError", "Encoder", "SchemaError", "SchemaStore", "default_store"]

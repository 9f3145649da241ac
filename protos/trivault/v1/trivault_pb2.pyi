from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorSpec(_message.Message):
    __slots__ = ("name", "dtype", "shape", "nbytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ...) -> None: ...

class BundleHeader(_message.Message):
    __slots__ = ("kind", "session_id", "meta_json", "tensors", "auth")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    kind: str
    session_id: str
    meta_json: str
    tensors: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    auth: bytes
    def __init__(self, kind: _Optional[str] = ..., session_id: _Optional[str] = ..., meta_json: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., auth: _Optional[bytes] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: BundleHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[BundleHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("txn_id", "auth")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    auth: bytes
    def __init__(self, txn_id: _Optional[str] = ..., auth: _Optional[bytes] = ...) -> None: ...

class TxnReply(_message.Message):
    __slots__ = ("txn_id", "state", "auth")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    state: str
    auth: bytes
    def __init__(self, txn_id: _Optional[str] = ..., state: _Optional[str] = ..., auth: _Optional[bytes] = ...) -> None: ...

class ImageRequest(_message.Message):
    __slots__ = ("image_id", "client_public_key", "deid", "auth")
    IMAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    DEID_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    image_id: int
    client_public_key: bytes
    deid: bool
    auth: bytes
    def __init__(self, image_id: _Optional[int] = ..., client_public_key: _Optional[bytes] = ..., deid: _Optional[bool] = ..., auth: _Optional[bytes] = ...) -> None: ...

class SignedCall(_message.Message):
    __slots__ = ("auth",)
    AUTH_FIELD_NUMBER: _ClassVar[int]
    auth: bytes
    def __init__(self, auth: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ok", "message", "meta_json")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    META_JSON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    meta_json: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., meta_json: _Optional[str] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerMsg(_message.Message):
    __slots__ = ("session_id", "seq", "sender", "shape", "data", "chunk", "n_chunks", "abort")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    N_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    sender: int
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    chunk: int
    n_chunks: int
    abort: bool
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., sender: _Optional[int] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., chunk: _Optional[int] = ..., n_chunks: _Optional[int] = ..., abort: _Optional[bool] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ("sender", "x25519_public_key")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    sender: int
    x25519_public_key: bytes
    def __init__(self, sender: _Optional[int] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("server", "x25519_public_key")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    X25519_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    server: int
    x25519_public_key: bytes
    def __init__(self, server: _Optional[int] = ..., x25519_public_key: _Optional[bytes] = ...) -> None: ...

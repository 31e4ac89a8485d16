from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_TASK: _ClassVar[PayloadKind]
    PAYLOAD_KIND_REPLY: _ClassVar[PayloadKind]
    PAYLOAD_KIND_MODEL: _ClassVar[PayloadKind]
    PAYLOAD_KIND_IDLE: _ClassVar[PayloadKind]
    PAYLOAD_KIND_DONE: _ClassVar[PayloadKind]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_TASK: PayloadKind
PAYLOAD_KIND_REPLY: PayloadKind
PAYLOAD_KIND_MODEL: PayloadKind
PAYLOAD_KIND_IDLE: PayloadKind
PAYLOAD_KIND_DONE: PayloadKind

class Tensor(_message.Message):
    __slots__ = ("data", "dtype", "shape")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, dtype: str | None = ..., shape: _Iterable[int] | None = ..., data: bytes | None = ...) -> None: ...

class TensorList(_message.Message):
    __slots__ = ("tensors",)
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    tensors: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, tensors: _Iterable[Tensor | _Mapping] | None = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("config_json", "extras", "round", "schema_hash", "stage", "weights")
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TensorList
        def __init__(self, key: str | None = ..., value: TensorList | _Mapping | None = ...) -> None: ...
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    round: int
    stage: str
    schema_hash: str
    weights: _containers.RepeatedCompositeFieldContainer[Tensor]
    config_json: str
    extras: _containers.MessageMap[str, TensorList]
    def __init__(self, round: int | None = ..., stage: str | None = ..., schema_hash: str | None = ..., weights: _Iterable[Tensor | _Mapping] | None = ..., config_json: str | None = ..., extras: _Mapping[str, TensorList] | None = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("arrays", "extras", "metrics", "num_examples", "participant", "refused", "round", "schema_hash", "stage")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...
    class ExtrasEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: TensorList
        def __init__(self, key: str | None = ..., value: TensorList | _Mapping | None = ...) -> None: ...
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    ARRAYS_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EXTRAS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    participant: str
    round: int
    stage: str
    schema_hash: str
    arrays: _containers.RepeatedCompositeFieldContainer[Tensor]
    num_examples: int
    metrics: _containers.ScalarMap[str, float]
    extras: _containers.MessageMap[str, TensorList]
    refused: str
    def __init__(self, participant: str | None = ..., round: int | None = ..., stage: str | None = ..., schema_hash: str | None = ..., arrays: _Iterable[Tensor | _Mapping] | None = ..., num_examples: int | None = ..., metrics: _Mapping[str, float] | None = ..., extras: _Mapping[str, TensorList] | None = ..., refused: str | None = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("kind", "protocol_version", "round", "schema_hash", "sha256", "stage", "ticket", "total_size")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_HASH_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    kind: PayloadKind
    total_size: int
    sha256: bytes
    ticket: int
    round: int
    stage: str
    schema_hash: str
    def __init__(self, protocol_version: int | None = ..., kind: PayloadKind | str | None = ..., total_size: int | None = ..., sha256: bytes | None = ..., ticket: int | None = ..., round: int | None = ..., stage: str | None = ..., schema_hash: str | None = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data", "envelope")
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    envelope: Envelope
    data: bytes
    def __init__(self, envelope: Envelope | _Mapping | None = ..., data: bytes | None = ...) -> None: ...

class PullTaskRequest(_message.Message):
    __slots__ = ("wait_ms",)
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    wait_ms: int
    def __init__(self, wait_ms: int | None = ...) -> None: ...

class PushAck(_message.Message):
    __slots__ = ("received_bytes", "sha256")
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    received_bytes: int
    sha256: bytes
    def __init__(self, received_bytes: int | None = ..., sha256: bytes | None = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: str | None = ...) -> None: ...

class ModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

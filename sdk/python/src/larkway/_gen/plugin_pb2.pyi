import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ActionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_KIND_UNSPECIFIED: _ClassVar[ActionKind]
    ACTION_KIND_SEND: _ClassVar[ActionKind]
    ACTION_KIND_REPLY: _ClassVar[ActionKind]
    ACTION_KIND_UPDATE_CARD: _ClassVar[ActionKind]
    ACTION_KIND_REACTION: _ClassVar[ActionKind]
    ACTION_KIND_RAW_CALL: _ClassVar[ActionKind]

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_DONE: _ClassVar[Outcome]
    OUTCOME_RETRY: _ClassVar[Outcome]
    OUTCOME_FAILED: _ClassVar[Outcome]

class ToastType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOAST_TYPE_UNSPECIFIED: _ClassVar[ToastType]
    TOAST_TYPE_INFO: _ClassVar[ToastType]
    TOAST_TYPE_SUCCESS: _ClassVar[ToastType]
    TOAST_TYPE_WARNING: _ClassVar[ToastType]
    TOAST_TYPE_ERROR: _ClassVar[ToastType]
ACTION_KIND_UNSPECIFIED: ActionKind
ACTION_KIND_SEND: ActionKind
ACTION_KIND_REPLY: ActionKind
ACTION_KIND_UPDATE_CARD: ActionKind
ACTION_KIND_REACTION: ActionKind
ACTION_KIND_RAW_CALL: ActionKind
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_DONE: Outcome
OUTCOME_RETRY: Outcome
OUTCOME_FAILED: Outcome
TOAST_TYPE_UNSPECIFIED: ToastType
TOAST_TYPE_INFO: ToastType
TOAST_TYPE_SUCCESS: ToastType
TOAST_TYPE_WARNING: ToastType
TOAST_TYPE_ERROR: ToastType

class DescribeRequest(_message.Message):
    __slots__ = ("core_contract_version", "core_version", "state_broker_id", "accepts_result_batches")
    CORE_CONTRACT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_BROKER_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_RESULT_BATCHES_FIELD_NUMBER: _ClassVar[int]
    core_contract_version: str
    core_version: str
    state_broker_id: int
    accepts_result_batches: bool
    def __init__(self, core_contract_version: _Optional[str] = ..., core_version: _Optional[str] = ..., state_broker_id: _Optional[int] = ..., accepts_result_batches: _Optional[bool] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("manifest",)
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    manifest: Manifest
    def __init__(self, manifest: _Optional[_Union[Manifest, _Mapping]] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("name", "version", "subscriptions", "max_in_flight", "allowed_actions", "fallback_reply_text", "description", "accepts_delivery_batches")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_REPLY_TEXT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTS_DELIVERY_BATCHES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    max_in_flight: int
    allowed_actions: _containers.RepeatedScalarFieldContainer[ActionKind]
    fallback_reply_text: str
    description: str
    accepts_delivery_batches: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., max_in_flight: _Optional[int] = ..., allowed_actions: _Optional[_Iterable[_Union[ActionKind, str]]] = ..., fallback_reply_text: _Optional[str] = ..., description: _Optional[str] = ..., accepts_delivery_batches: _Optional[bool] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("event_types", "commands", "text_patterns", "chat_ids")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    TEXT_PATTERNS_FIELD_NUMBER: _ClassVar[int]
    CHAT_IDS_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedScalarFieldContainer[str]
    commands: _containers.RepeatedScalarFieldContainer[str]
    text_patterns: _containers.RepeatedScalarFieldContainer[str]
    chat_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_types: _Optional[_Iterable[str]] = ..., commands: _Optional[_Iterable[str]] = ..., text_patterns: _Optional[_Iterable[str]] = ..., chat_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HandleRequest(_message.Message):
    __slots__ = ("delivery", "result_ack", "deliveries")
    DELIVERY_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACK_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    delivery: Delivery
    result_ack: ResultAck
    deliveries: DeliveryBatch
    def __init__(self, delivery: _Optional[_Union[Delivery, _Mapping]] = ..., result_ack: _Optional[_Union[ResultAck, _Mapping]] = ..., deliveries: _Optional[_Union[DeliveryBatch, _Mapping]] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("delivery_id", "event", "attempt", "deadline", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    event: Event
    attempt: int
    deadline: _timestamp_pb2.Timestamp
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, delivery_id: _Optional[str] = ..., event: _Optional[_Union[Event, _Mapping]] = ..., attempt: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "event_type", "app_id", "tenant_key", "create_time", "schema", "dedup_key", "chat_id", "sender", "message", "card_action", "raw_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    APP_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEDUP_KEY_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CARD_ACTION_FIELD_NUMBER: _ClassVar[int]
    RAW_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    app_id: str
    tenant_key: str
    create_time: _timestamp_pb2.Timestamp
    schema: str
    dedup_key: str
    chat_id: str
    sender: UserId
    message: Message
    card_action: CardAction
    raw_json: bytes
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., app_id: _Optional[str] = ..., tenant_key: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., schema: _Optional[str] = ..., dedup_key: _Optional[str] = ..., chat_id: _Optional[str] = ..., sender: _Optional[_Union[UserId, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., card_action: _Optional[_Union[CardAction, _Mapping]] = ..., raw_json: _Optional[bytes] = ...) -> None: ...

class UserId(_message.Message):
    __slots__ = ("open_id", "user_id", "union_id", "sender_type")
    OPEN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    UNION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    open_id: str
    user_id: str
    union_id: str
    sender_type: str
    def __init__(self, open_id: _Optional[str] = ..., user_id: _Optional[str] = ..., union_id: _Optional[str] = ..., sender_type: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("message_id", "root_id", "parent_id", "thread_id", "chat_id", "chat_type", "message_type", "content_json", "text", "mentions", "resource_key")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MENTIONS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_KEY_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    root_id: str
    parent_id: str
    thread_id: str
    chat_id: str
    chat_type: str
    message_type: str
    content_json: str
    text: str
    mentions: _containers.RepeatedCompositeFieldContainer[Mention]
    resource_key: str
    def __init__(self, message_id: _Optional[str] = ..., root_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., chat_id: _Optional[str] = ..., chat_type: _Optional[str] = ..., message_type: _Optional[str] = ..., content_json: _Optional[str] = ..., text: _Optional[str] = ..., mentions: _Optional[_Iterable[_Union[Mention, _Mapping]]] = ..., resource_key: _Optional[str] = ...) -> None: ...

class Mention(_message.Message):
    __slots__ = ("key", "name", "id")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    id: UserId
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., id: _Optional[_Union[UserId, _Mapping]] = ...) -> None: ...

class CardAction(_message.Message):
    __slots__ = ("open_message_id", "open_chat_id", "token", "tag", "value_json", "option", "name", "form_value_json", "input_value", "timezone", "operator", "awaits_response")
    OPEN_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_CHAT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    OPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORM_VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    AWAITS_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    open_message_id: str
    open_chat_id: str
    token: str
    tag: str
    value_json: str
    option: str
    name: str
    form_value_json: str
    input_value: str
    timezone: str
    operator: UserId
    awaits_response: bool
    def __init__(self, open_message_id: _Optional[str] = ..., open_chat_id: _Optional[str] = ..., token: _Optional[str] = ..., tag: _Optional[str] = ..., value_json: _Optional[str] = ..., option: _Optional[str] = ..., name: _Optional[str] = ..., form_value_json: _Optional[str] = ..., input_value: _Optional[str] = ..., timezone: _Optional[str] = ..., operator: _Optional[_Union[UserId, _Mapping]] = ..., awaits_response: _Optional[bool] = ...) -> None: ...

class HandleResponse(_message.Message):
    __slots__ = ("result", "results")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    result: Result
    results: ResultBatch
    def __init__(self, result: _Optional[_Union[Result, _Mapping]] = ..., results: _Optional[_Union[ResultBatch, _Mapping]] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("delivery_id", "outcome", "error", "retry_after", "actions", "card_response")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CARD_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    outcome: Outcome
    error: str
    retry_after: _duration_pb2.Duration
    actions: _containers.RepeatedCompositeFieldContainer[Action]
    card_response: CardResponse
    def __init__(self, delivery_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., error: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., actions: _Optional[_Iterable[_Union[Action, _Mapping]]] = ..., card_response: _Optional[_Union[CardResponse, _Mapping]] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("delivery_id", "refused")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    refused: _containers.RepeatedCompositeFieldContainer[RefusedAction]
    def __init__(self, delivery_id: _Optional[str] = ..., refused: _Optional[_Iterable[_Union[RefusedAction, _Mapping]]] = ...) -> None: ...

class RefusedAction(_message.Message):
    __slots__ = ("index", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("send", "reply", "update_card", "delayed_card_update", "add_reaction", "remove_reaction", "raw_call")
    SEND_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_CARD_FIELD_NUMBER: _ClassVar[int]
    DELAYED_CARD_UPDATE_FIELD_NUMBER: _ClassVar[int]
    ADD_REACTION_FIELD_NUMBER: _ClassVar[int]
    REMOVE_REACTION_FIELD_NUMBER: _ClassVar[int]
    RAW_CALL_FIELD_NUMBER: _ClassVar[int]
    send: SendMessage
    reply: ReplyMessage
    update_card: UpdateCard
    delayed_card_update: DelayedCardUpdate
    add_reaction: AddReaction
    remove_reaction: RemoveReaction
    raw_call: RawCall
    def __init__(self, send: _Optional[_Union[SendMessage, _Mapping]] = ..., reply: _Optional[_Union[ReplyMessage, _Mapping]] = ..., update_card: _Optional[_Union[UpdateCard, _Mapping]] = ..., delayed_card_update: _Optional[_Union[DelayedCardUpdate, _Mapping]] = ..., add_reaction: _Optional[_Union[AddReaction, _Mapping]] = ..., remove_reaction: _Optional[_Union[RemoveReaction, _Mapping]] = ..., raw_call: _Optional[_Union[RawCall, _Mapping]] = ...) -> None: ...

class SendMessage(_message.Message):
    __slots__ = ("receive_id_type", "receive_id", "msg_type", "content_json")
    RECEIVE_ID_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    receive_id_type: str
    receive_id: str
    msg_type: str
    content_json: str
    def __init__(self, receive_id_type: _Optional[str] = ..., receive_id: _Optional[str] = ..., msg_type: _Optional[str] = ..., content_json: _Optional[str] = ...) -> None: ...

class ReplyMessage(_message.Message):
    __slots__ = ("message_id", "msg_type", "content_json", "reply_in_thread")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_JSON_FIELD_NUMBER: _ClassVar[int]
    REPLY_IN_THREAD_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    msg_type: str
    content_json: str
    reply_in_thread: bool
    def __init__(self, message_id: _Optional[str] = ..., msg_type: _Optional[str] = ..., content_json: _Optional[str] = ..., reply_in_thread: _Optional[bool] = ...) -> None: ...

class UpdateCard(_message.Message):
    __slots__ = ("message_id", "card_json")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    card_json: str
    def __init__(self, message_id: _Optional[str] = ..., card_json: _Optional[str] = ...) -> None: ...

class DelayedCardUpdate(_message.Message):
    __slots__ = ("token", "card_json", "open_ids")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    OPEN_IDS_FIELD_NUMBER: _ClassVar[int]
    token: str
    card_json: str
    open_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, token: _Optional[str] = ..., card_json: _Optional[str] = ..., open_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AddReaction(_message.Message):
    __slots__ = ("message_id", "emoji_type")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    EMOJI_TYPE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    emoji_type: str
    def __init__(self, message_id: _Optional[str] = ..., emoji_type: _Optional[str] = ...) -> None: ...

class RemoveReaction(_message.Message):
    __slots__ = ("message_id", "reaction_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REACTION_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    reaction_id: str
    def __init__(self, message_id: _Optional[str] = ..., reaction_id: _Optional[str] = ...) -> None: ...

class RawCall(_message.Message):
    __slots__ = ("method", "path", "body_json")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BODY_JSON_FIELD_NUMBER: _ClassVar[int]
    method: str
    path: str
    body_json: str
    def __init__(self, method: _Optional[str] = ..., path: _Optional[str] = ..., body_json: _Optional[str] = ...) -> None: ...

class CardResponse(_message.Message):
    __slots__ = ("toast", "card_json")
    TOAST_FIELD_NUMBER: _ClassVar[int]
    CARD_JSON_FIELD_NUMBER: _ClassVar[int]
    toast: Toast
    card_json: str
    def __init__(self, toast: _Optional[_Union[Toast, _Mapping]] = ..., card_json: _Optional[str] = ...) -> None: ...

class Toast(_message.Message):
    __slots__ = ("type", "content", "i18n")
    class I18nEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    I18N_FIELD_NUMBER: _ClassVar[int]
    type: ToastType
    content: str
    i18n: _containers.ScalarMap[str, str]
    def __init__(self, type: _Optional[_Union[ToastType, str]] = ..., content: _Optional[str] = ..., i18n: _Optional[_Mapping[str, str]] = ...) -> None: ...

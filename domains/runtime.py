"""Domain runtime: tools, episodes with copy-on-write state, transactions, hashing.

A domain's database is a pydantic model whose fields are tables (``dict[str, Record]``).
The loaded database is never mutated. Each episode keeps an overlay of the records it
changed; a tool call runs inside a transaction layered over that overlay, and the
transaction is merged only when the tool returns without error. Opening an episode is
therefore O(1), and a failing call leaves no trace. The environment keeps the call sequences
its episodes ran as a tree (`ReplayCache`), so replaying calls already run from the initial
state costs a look-up per call.

The state hash is a multiset hash: the sum (mod 2**128) of one hash per record, each
computed from the record's canonical JSON. It is independent of dict order, and an
episode updates it incrementally from the records it changed.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, cast, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

if TYPE_CHECKING:
    from trajectory2task.domains.audit_checks import AuditCheck
    from trajectory2task.domains.kit import GenerationKit

ToolKind = Literal["read", "write", "generic"]  # generic: neither reads nor writes the database
# How an authenticating tool names the user it authenticated: from (arguments, output).
Authenticates = Callable[[Mapping[str, Any], str], "str | None"]
_HASH_MOD = 1 << 128
_MISSING: Any = object()

DB = TypeVar("DB", bound=BaseModel)


class ToolError(Exception):
    """Raised by a tool to refuse a call; the message becomes the error observation."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_json(record: BaseModel) -> Any:
    return record.model_dump(mode="json")


def _record_hash(table: str, key: str, record: BaseModel) -> int:
    text = canonical_json([table, key, record_json(record)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big")


# ---------------------------------------------------------------- tools


@dataclass(frozen=True)
class ToolSpec:
    """A tool: a typed Python function whose first parameter is the transaction."""

    name: str
    kind: ToolKind
    description: str
    function: Callable[..., Any]
    arguments_model: type[BaseModel]
    parameter_descriptions: Mapping[str, str] = field(default_factory=dict)
    authenticates: Authenticates | None = None  # set on tools that identify the user
    ends_conversation: bool = False  # a hand-off to a human

    @cached_property
    def parameters(self) -> dict[str, Any]:
        """JSON schema of the arguments (OpenAI `parameters`), one description per parameter.
        Computed once per tool; callers must not modify it."""
        schema = self.arguments_model.model_json_schema()
        schema.pop("title", None)
        for name, prop in schema.get("properties", {}).items():
            prop.pop("title", None)
            if name in self.parameter_descriptions:
                prop["description"] = self.parameter_descriptions[name]
        schema.setdefault("required", [])
        schema["additionalProperties"] = False
        return schema

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description,
                         "parameters": copy.deepcopy(self.parameters)},
        }


@dataclass(frozen=True)
class _ToolMark:
    kind: ToolKind
    authenticates: Authenticates | None
    ends_conversation: bool


def tool(kind: ToolKind, *, authenticates: Authenticates | None = None,
         ends_conversation: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a function as a domain tool: its role (read, write or generic), whether it
    authenticates the user (and how the user id is read from the call), and whether it
    ends the conversation (a hand-off to a human)."""
    if kind not in ("read", "write", "generic"):
        raise ValueError(f"tool kind must be read, write or generic, not {kind!r}")

    def mark(function: Callable[..., Any]) -> Callable[..., Any]:
        function.__t2t_tool__ = _ToolMark(kind, authenticates, ends_conversation)  # type: ignore[attr-defined]
        return function

    return mark


def user_from_output(arguments: Mapping[str, Any], output: str) -> str | None:
    """For look-ups whose whole output is the user id (``find_user_id_by_email``)."""
    return output.strip() or None


def user_from_argument(name: str) -> Authenticates:
    """For tools whose argument ``name`` is the user id, authenticated when the call succeeds."""

    def read(arguments: Mapping[str, Any], output: str) -> str | None:
        value = arguments.get(name)
        return value if isinstance(value, str) and value else None

    return read


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary of a Google-style docstring and its ``Args:`` entries."""
    summary, _, rest = doc.partition("\nArgs:")
    descriptions: dict[str, str] = {}
    current: str | None = None
    for line in rest.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.endswith(":") and " " not in stripped:  # the next section (Returns:, Raises:)
            break
        head, colon, text = stripped.partition(":")
        if colon and " " not in head.split("(")[0].strip() and line.startswith((" ", "\t")) and \
                len(line) - len(line.lstrip()) <= 4:
            current = head.split("(")[0].strip()
            descriptions[current] = text.strip()
        elif current is not None:
            descriptions[current] = f"{descriptions[current]} {stripped}".strip()
    return summary.strip(), descriptions


def tool_spec(function: Callable[..., Any]) -> ToolSpec:
    """Build a ToolSpec from a function marked with :func:`tool`."""
    mark: _ToolMark | None = getattr(function, "__t2t_tool__", None)
    if mark is None:
        raise TypeError(f"{function.__name__} is not marked with @tool")
    hints = get_type_hints(function)
    params = list(inspect.signature(function).parameters.values())[1:]  # skip the transaction
    fields: dict[str, Any] = {}
    for p in params:
        annotation = hints.get(p.name, Any)
        fields[p.name] = (annotation, ... if p.default is inspect.Parameter.empty else p.default)
    model = create_model(  # type: ignore[call-overload]
        f"{function.__name__}_arguments",
        # the validator is built on the tool's first call: listing a domain builds none
        __config__=ConfigDict(extra="forbid", defer_build=True),
        **fields,
    )
    summary, descriptions = _split_docstring(inspect.cleandoc(function.__doc__ or ""))
    return ToolSpec(function.__name__, mark.kind, summary, function, model,
                    parameter_descriptions={k: v for k, v in descriptions.items() if k in fields},
                    authenticates=mark.authenticates, ends_conversation=mark.ends_conversation)


# ---------------------------------------------------------------- state


class BaseState(Generic[DB]):
    """The loaded, immutable database with its per-record hashes."""

    def __init__(self, db: DB) -> None:
        self.db = db
        self.tables: dict[str, dict[str, BaseModel]] = {name: getattr(db, name) for name in type(db).model_fields}
        self.record_hashes: dict[tuple[str, str], int] = {}
        total = 0
        for table, records in self.tables.items():
            for key, record in records.items():
                h = _record_hash(table, key, record)
                self.record_hashes[(table, key)] = h
                total += h
        self.hash_sum = total % _HASH_MOD


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _private_copy(value: Any) -> Any:
    """A deep copy of a record, as ``model_copy(deep=True)`` gives, for the plain lists, dicts,
    scalars and models records are made of, without ``copy.deepcopy``'s memo and dispatch (on
    a write, the copy was a fifth of a verification's time). Anything else (a model with
    extra or private values, another type) goes to ``copy.deepcopy``."""
    kind = type(value)
    if kind in _IMMUTABLE:
        return value
    if kind is list:
        return [_private_copy(v) for v in value]
    if kind is dict:
        return {k: _private_copy(v) for k, v in value.items()}
    if isinstance(value, BaseModel) and value.__pydantic_extra__ is None and value.__pydantic_private__ is None:
        twin = kind.__new__(kind)
        # the instance attributes pydantic documents for every model
        object.__setattr__(twin, "__dict__", {k: _private_copy(v) for k, v in value.__dict__.items()})
        object.__setattr__(twin, "__pydantic_fields_set__", set(value.__pydantic_fields_set__))
        object.__setattr__(twin, "__pydantic_extra__", None)
        object.__setattr__(twin, "__pydantic_private__", None)
        return twin
    return copy.deepcopy(value)


class Transaction:
    """Reads and copy-on-write access for one tool call.

    Records returned by :meth:`get` are shared and must not be mutated; call
    :meth:`for_update` to get a private copy that the transaction will commit.
    """

    def __init__(self, episode: Episode) -> None:
        self._episode = episode
        self.pending: dict[tuple[str, str], BaseModel] = {}

    def get(self, table: str, key: str) -> BaseModel | None:
        found = self.pending.get((table, key), _MISSING)
        if found is not _MISSING:
            return found
        return self._episode.get(table, key)

    def for_update(self, table: str, key: str) -> BaseModel | None:
        found = self.pending.get((table, key))
        if found is not None:
            return found
        current = self._episode.get(table, key)
        if current is None:
            return None
        private = _private_copy(current)
        self.pending[(table, key)] = private
        return private

    def insert(self, table: str, key: str, record: BaseModel) -> None:
        self.pending[(table, key)] = record

    def keys(self, table: str) -> Iterator[str]:
        yield from self._episode.keys(table)
        for t, k in self.pending:
            if t == table and self._episode.get(t, k) is None:
                yield k

    def values(self, table: str) -> Iterator[BaseModel]:
        # what keys() then get() give, in the same order, with one look-up per base record
        # instead of three (tools scan whole tables: find_user_id_by_name_zip)
        episode, pending = self._episode, self.pending
        overlay = episode._overlay
        for key, record in episode._base.tables[table].items():
            if pending or overlay:  # the version this call or an earlier one wrote, if any
                written = pending.get((table, key))
                if written is None:
                    written = overlay.get((table, key))
                if written is not None:
                    record = written
            yield record
        for key in episode._new_keys.get(table, ()):
            added = self.get(table, key)
            if added is not None:
                yield added
        for t, k in self.pending:
            if t == table and episode.get(t, k) is None:
                yield self.pending[(t, k)]


class ToolResult(BaseModel):
    """What a tool call gives back: an observation text and whether it is an error."""

    model_config = ConfigDict(frozen=True)

    output: str
    error: bool = False
    # why a call failed: a tool's own check refused it, the call was malformed (unknown tool,
    # bad arguments), or the tool crashed; None when it succeeded
    error_kind: Literal["refused", "invalid_call", "tool_bug"] | None = None

    @property
    def error_message(self) -> str:
        """The tool's own error text, without the 'Error: ' prefix the model sees."""
        return self.output.removeprefix("Error: ") if self.error else ""


class _ReplayNode:
    """One call sequence run from the initial state: what its last call gave and the state
    after it. The state's dicts are shared with every episode standing on the node, which
    copies them before its next write."""

    __slots__ = ("result", "overlay", "overlay_hashes", "new_keys", "hash_sum", "children")

    def __init__(self, result: ToolResult | None, overlay: dict[tuple[str, str], BaseModel],
                 overlay_hashes: dict[tuple[str, str], int], new_keys: dict[str, list[str]], hash_sum: int) -> None:
        self.result = result
        self.overlay = overlay
        self.overlay_hashes = overlay_hashes
        self.new_keys = new_keys
        self.hash_sum = hash_sum
        self.children: dict[tuple[Any, ...], _ReplayNode] = {}


class ReplayCache:
    """Every call sequence run on the environment's episodes, as a tree from the initial state.

    Tools are deterministic functions of the state and the arguments, so a call an episode
    has already seen from the same state gives the same result and the same next state.
    Verification replays the same gold prefixes many times (each mutant, reading and
    forbidden action starts from the initial state); with the tree, a replay runs only the
    calls no earlier replay ran. The tree is dropped whole past ``max_nodes``: episodes
    standing on a dropped node keep working, and later replays start a new tree. (A generation
    item adds some 40 nodes, and replays seldom share calls across items: 2,000 nodes keep
    every hit for ~10 MB.)
    """

    def __init__(self, base: BaseState[Any], max_nodes: int = 2_000) -> None:
        self.max_nodes = max_nodes
        self._base_hash = base.hash_sum
        self.nodes = 0
        self.root = self._new_root()

    def __reduce__(self) -> tuple[Any, ...]:
        # an environment sent to another process (a Ray actor) takes an empty tree, not the
        # records of every replay this one ran
        return _empty_replays, (self._base_hash, self.max_nodes)

    def _new_root(self) -> _ReplayNode:
        return _ReplayNode(None, {}, {}, {}, self._base_hash)

    def add(self, parent: _ReplayNode, key: tuple[Any, ...], node: _ReplayNode) -> None:
        if self.nodes >= self.max_nodes:
            self.root, self.nodes = self._new_root(), 0
        parent.children[key] = node
        self.nodes += 1


def _empty_replays(base_hash: int, max_nodes: int) -> ReplayCache:
    replays = ReplayCache.__new__(ReplayCache)
    replays.max_nodes, replays._base_hash, replays.nodes = max_nodes, base_hash, 0
    replays.root = replays._new_root()
    return replays


class _Unkeyable(Exception):
    pass


def _frozen(value: Any) -> Any:
    """A hashable image of a JSON value, equal only for equal values of equal JSON types (so
    1, 1.0 and True stay apart, and NaN, unequal to itself, never matches)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is int or kind is float or kind is bool or value is None:
        return kind, value
    if kind is list:
        return list, tuple(_frozen(v) for v in value)
    if kind is dict:
        if not all(type(k) is str for k in value):
            raise _Unkeyable
        return dict, tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    raise _Unkeyable  # anything else (a Python caller's own objects) is not keyed


def _replay_key(spec: ToolSpec, arguments: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A call's identity: equal keys are equal calls of the same tool (its function and argument
    model, so a tool replaced on the environment is a new tool). None for arguments that are
    not plain JSON values: such a call runs without the cache."""
    try:
        return spec.name, spec.function, spec.arguments_model, _frozen(dict(arguments))
    except _Unkeyable:
        return None


class Episode(Generic[DB]):
    """One trajectory's or rollout's private state over a shared base."""

    def __init__(self, environment: Environment[DB], cached: bool = True) -> None:
        self.environment = environment
        self._base = environment.base
        root = environment.replays.root
        # the state dicts are the node's until this episode's first write (copy-on-write)
        self._node: _ReplayNode | None = root if cached else None
        self._overlay: dict[tuple[str, str], BaseModel] = root.overlay
        self._new_keys: dict[str, list[str]] = root.new_keys
        self._hash_sum = root.hash_sum
        self._overlay_hashes: dict[tuple[str, str], int] = root.overlay_hashes
        self._shared = True

    # --- reads
    def get(self, table: str, key: str) -> BaseModel | None:
        found = self._overlay.get((table, key))
        if found is not None:
            return found
        return self._base.tables[table].get(key)

    def keys(self, table: str) -> Iterator[str]:
        yield from self._base.tables[table].keys()
        yield from self._new_keys.get(table, ())

    def record(self, table: str, key: str) -> dict[str, Any] | None:
        found = self.get(table, key)
        return None if found is None else record_json(found)

    # --- calls
    def call(self, name: str, arguments: Mapping[str, Any] | None = None) -> ToolResult:
        """Run one tool call as a transaction. Never raises for bad calls."""
        if not isinstance(name, str):  # an LM can send any JSON value as the name; a list is unhashable
            return ToolResult(output=f"Error: a tool name must be a string, not {type(name).__name__}", error=True)
        spec = self.environment.tools.get(name)
        if spec is None:
            return ToolResult(output=f"Error: unknown tool {name!r}", error=True, error_kind="invalid_call")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            return ToolResult(output="Error: arguments must be a JSON object", error=True, error_kind="invalid_call")
        node = self._node
        key = None if node is None else _replay_key(spec, arguments)
        if node is None or key is None:
            self._node = None  # this episode's history is no longer a sequence the tree can name
            return self._run(spec, name, arguments)
        seen = node.children.get(key)
        if seen is None:
            result = self._run(spec, name, arguments)
            self._shared = True  # the new node takes this episode's dicts as they now are
            seen = _ReplayNode(result, self._overlay, self._overlay_hashes, self._new_keys, self._hash_sum)
            self.environment.replays.add(node, key, seen)
        else:
            self._overlay, self._overlay_hashes = seen.overlay, seen.overlay_hashes
            self._new_keys, self._hash_sum, self._shared = seen.new_keys, seen.hash_sum, True
        self._node = seen
        assert seen.result is not None
        return seen.result

    def _run(self, spec: ToolSpec, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        try:
            validated = spec.arguments_model.model_validate(dict(arguments))
        except ValidationError as exc:
            return ToolResult(output=f"Error: invalid arguments for {name}: {_validation_summary(exc)}", error=True,
                              error_kind="invalid_call")
        tx = Transaction(self)
        try:
            value = spec.function(tx, **{k: getattr(validated, k) for k in type(validated).model_fields})
        except ToolError as exc:
            return ToolResult(output=f"Error: {exc}", error=True, error_kind="refused")
        except Exception as exc:  # a tool bug must not escape the environment
            return ToolResult(output=f"Error: {type(exc).__name__}: {exc}", error=True, error_kind="tool_bug")
        if spec.kind != "write" and tx.pending:
            return ToolResult(output=f"Error: {spec.kind} tool {name} attempted a write", error=True,
                              error_kind="tool_bug")
        self._commit(tx)
        return ToolResult(output=_render(value))

    def _commit(self, tx: Transaction) -> None:
        # a commit outside `call` is a change the tree cannot name (`call` re-attaches after its own)
        self._node = None
        if tx.pending and self._shared:
            self._overlay, self._overlay_hashes = dict(self._overlay), dict(self._overlay_hashes)
            self._new_keys = {t: list(v) for t, v in self._new_keys.items()}
            self._shared = False
        for (table, key), record in tx.pending.items():
            new_hash = _record_hash(table, key, record)
            old_hash = self._overlay_hashes.get((table, key))
            if old_hash is None:
                old_hash = self._base.record_hashes.get((table, key), 0)
                if (table, key) not in self._base.record_hashes and (table, key) not in self._overlay:
                    self._new_keys.setdefault(table, []).append(key)
            self._hash_sum = (self._hash_sum - old_hash + new_hash) % _HASH_MOD
            self._overlay[(table, key)] = record
            self._overlay_hashes[(table, key)] = new_hash

    # --- comparison
    def state_hash(self) -> str:
        return f"{self._hash_sum:032x}"

    def _hash_of(self, table: str, key: str) -> int:
        h = self._overlay_hashes.get((table, key))
        return self._base.record_hashes.get((table, key), 0) if h is None else h

    def changed(self) -> dict[str, list[str]]:
        """Records whose content differs from the initial database, by table."""
        out: dict[str, list[str]] = {}
        for (table, key), h in self._overlay_hashes.items():
            if self._base.record_hashes.get((table, key)) != h:
                out.setdefault(table, []).append(key)
        return {t: sorted(keys) for t, keys in sorted(out.items())}

    def diff(self, other: Episode[DB]) -> dict[str, list[str]]:
        """Records whose content differs between two episodes, by table."""
        if other._base is self._base:
            candidates = set(self._overlay_hashes) | set(other._overlay_hashes)
        else:
            candidates = set(self._base.record_hashes) | set(other._base.record_hashes)
            candidates |= set(self._overlay_hashes) | set(other._overlay_hashes)
        out: dict[str, list[str]] = {}
        for table, key in candidates:
            if self._hash_of(table, key) != other._hash_of(table, key):
                out.setdefault(table, []).append(key)
        return {t: sorted(keys) for t, keys in sorted(out.items())}

    def fork(self) -> Episode[DB]:
        """A new episode starting from this one's current state."""
        twin = Episode(self.environment)
        # records are replaced, never mutated, after commit; the dicts are copied on a write
        twin._overlay, twin._overlay_hashes, twin._new_keys = self._overlay, self._overlay_hashes, self._new_keys
        twin._hash_sum, twin._node = self._hash_sum, self._node
        self._shared = twin._shared = True
        return twin

    def to_db(self) -> DB:
        """Materialise the whole state as the domain's database model (slow; for export)."""
        data: dict[str, dict[str, Any]] = {}
        for table in self._base.tables:
            data[table] = {key: self.get(table, key) for key in self.keys(table)}
        return type(self._base.db).model_validate(data)


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False)


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        kind = err["type"]
        if kind == "missing":
            parts.append(f"missing argument '{where}'")
        elif kind == "extra_forbidden":
            parts.append(f"unexpected argument '{where}'")
        else:
            parts.append(f"'{where}': {err['msg']}")
    return "; ".join(parts)


# ---------------------------------------------------------------- policy rules


class PolicyContext(BaseModel):
    """What a policy rule may know besides the state: who the agent is serving."""

    user_id: str | None = None


@dataclass(frozen=True)
class PolicyRule:
    """A machine-checkable policy rule the tools themselves do not enforce.

    ``check`` looks at the state just before a call and returns a violation message,
    or None when the call is allowed.
    """

    rule_id: str
    description: str
    check: Callable[[Episode[Any], str, Mapping[str, Any], PolicyContext], str | None]


OwnerOf = Callable[[Episode[Any], str, str], "str | None"]  # (episode, table, key) -> the owning user
OWN_RECORDS_RULE = "own_records_only"


def _argument_strings(arguments: Mapping[str, Any]) -> Iterator[str]:
    """The string values of a call's arguments, top level and inside top-level lists."""
    for value in arguments.values():
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def argument_owners(episode: Episode[Any], owner_of: OwnerOf, arguments: Mapping[str, Any]) -> dict[str, str]:
    """Each argument value that is the key of a record with an owner, mapped to that owner
    (``owner_of`` is the domain's record-ownership function)."""
    out: dict[str, str] = {}
    for value in _argument_strings(arguments):
        for table in episode.environment.base.tables:
            if episode.get(table, value) is not None:
                owner = owner_of(episode, table, value)
                if owner is not None:
                    out[value] = owner
                    break
    return out


def owner_rule(owner_of: OwnerOf) -> PolicyRule:
    """The rule every domain has, from its owner function: a write acts only on records the
    authenticated user owns (a record is named by an argument equal to its key)."""

    def check(episode: Episode[Any], name: str, arguments: Mapping[str, Any], context: PolicyContext) -> str | None:
        spec = episode.environment.tools.get(name)
        if context.user_id is None or spec is None or spec.kind != "write":
            return None
        others = {v: o for v, o in argument_owners(episode, owner_of, arguments).items() if o != context.user_id}
        if not others:
            return None
        value, owner = next(iter(others.items()))
        return f"{name} acts on {value} of {owner}, not of the authenticated user {context.user_id}"

    return PolicyRule(OWN_RECORDS_RULE, "Act only on records the authenticated user owns.", check)


# ---------------------------------------------------------------- domain and environment


@dataclass(frozen=True)
class Deferred:
    """An attribute of a module, named and not yet imported. A domain's DOMAIN may give its
    database generator, its checks and its generation kit this way, so that what needs only
    its tools and rules (listing domains, replaying tasks) does not import the code that only
    generation needs; reading the field imports the module, once."""

    module: str
    name: str

    def load(self) -> Any:
        return getattr(importlib.import_module(self.module), self.name)


V = TypeVar("V")


class _Deferrable(Generic[V]):
    """A Domain field that may be given a :class:`Deferred`; read, it is the object named."""

    def __init__(self, default: V) -> None:
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_{name}_given"

    def __get__(self, instance: object | None, owner: type) -> V:
        if instance is None:  # a dataclass finds the field's default here
            return self.default
        value = instance.__dict__[self.key]
        if isinstance(value, Deferred):
            value = value.load()
            instance.__dict__[self.key] = value
        return cast(V, value)

    def __set__(self, instance: object, value: V | Deferred) -> None:
        instance.__dict__[self.key] = value


def _no_problems(db: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Domain(Generic[DB]):
    """Everything that makes a domain: database model, tools, policy, generator, checks.
    ``generate_db``, ``check_db`` and ``kit`` may be given as :class:`Deferred`."""

    name: str
    summary: str
    db_model: type[DB]
    tools: tuple[ToolSpec, ...]
    policy: str
    policy_rules: tuple[PolicyRule, ...] = ()
    generate_db: _Deferrable[Callable[[int, int], DB] | None] = _Deferrable(None)
    check_db: _Deferrable[Callable[[DB], list[str]]] = _Deferrable(_no_problems)
    owner_of: Callable[[Episode[Any], str, str], str | None] = field(default=lambda ep, table, key: None)
    # optional help for generation (trajectory2task.domains.kit)
    kit: _Deferrable[GenerationKit | None] = _Deferrable(None)
    # the audit classes only a policy defines (trajectory2task.domains.audit_checks); a class
    # without a check here is reported as not applicable
    audit_checks: tuple[AuditCheck, ...] = ()

    def tool(self, name: str) -> ToolSpec | None:
        return next((t for t in self.tools if t.name == name), None)

    @cached_property
    def enforced_rules(self) -> tuple[PolicyRule, ...]:
        """The domain's enumerated rules and, last, the ownership rule every domain has."""
        return (*self.policy_rules, owner_rule(self.owner_of))

    def load_db(self, path: str) -> DB:
        with open(path, "rb") as fh:
            return self.db_model.model_validate_json(fh.read())

    def environment(self, db: DB, policy: str | None = None) -> Environment[DB]:
        return Environment(self, db, policy)


class Environment(Generic[DB]):
    """A domain over one loaded database; hands out cheap episodes."""

    def __init__(self, domain: Domain[DB], db: DB, policy: str | None = None) -> None:
        self.domain = domain
        self.base: BaseState[DB] = BaseState(db)
        self.replays = ReplayCache(self.base)
        self.tools: dict[str, ToolSpec] = {t.name: t for t in domain.tools}
        self.policy = policy if policy is not None else domain.policy

    def episode(self, cached: bool = True) -> Episode[DB]:
        """A new episode at the initial state. ``cached=False``: every call of it runs, none is
        answered from the replay tree (`ReplayCache`), for checking that the tools replay."""
        return Episode(self, cached)

    def initial_hash(self) -> str:
        return f"{self.base.hash_sum:032x}"

    def tool_schemas(self) -> list[dict[str, Any]]:
        return [t.openai_schema() for t in self.domain.tools]

    def policy_violations(
        self, episode: Episode[DB], name: str, arguments: Mapping[str, Any], context: PolicyContext
    ) -> list[str]:
        """Policy rules (the domain's and the ownership rule) that a call would break in the
        episode's current state, each as ``rule_id: message``."""
        out = []
        for rule in self.domain.enforced_rules:
            message = rule.check(episode, name, arguments, context)
            if message:
                out.append(f"{rule.rule_id}: {message}")
        return out

"""Structured output: JSON-schema constrained decoding for typed signatures, where the
endpoint offers it, with DSPy's JSON adapter; plain parsing otherwise.

`StructuredAdapter` is a `dspy.JSONAdapter` that sends the signature's output schema in the
request in the shape the endpoint takes (a "dialect"):

- ``json_schema``: ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``:
  OpenAI, vLLM, and Ollama through LiteLLM (which maps it to Ollama's ``format``);
- ``json_object_schema``: ``{"type": "json_object", "schema": ...}``: llama-cpp-python's
  server (its ``response_format`` accepts only ``text`` and ``json_object``).

The role's ``structured`` setting picks the behaviour: ``on`` and ``auto`` try the dialects
in turn, keeping the first one the endpoint accepts for the rest of the run (on the role's
`LMRole`, shared by copies of the LM); when the endpoint refuses every one, ``auto`` falls
back to DSPy's `ChatAdapter` text format and ``on`` fails with one line. ``off`` is DSPy's
default `ChatAdapter` as it is (text format; after a parse failure it asks once more in JSON).

A reply is parsed as JSON first and, failing that, with the `ChatAdapter`'s field markers,
so a server that ignored the schema still gets its answer read (no second call).

DSPy's own JSON adapter never sends a schema to a model its map does not know
(``openai/<local name>``): it checks ``lm.supported_params``. This adapter decides from the
role's setting instead, which is what a local endpoint needs.
"""

from __future__ import annotations

from typing import Any

import dspy
from dspy.adapters.types.tool import ToolCalls
from dspy.utils.exceptions import AdapterParseError, LMInvalidRequestError, LMProviderError

from trajectory2task.programs.lm.accounting import role_of
from trajectory2task.programs.lm.dspy_private import has_open_ended_mapping, structured_outputs_format

DIALECTS: tuple[str, ...] = ("json_schema", "json_object_schema")
PLAIN = "plain"

_PLAIN_ADAPTER = dspy.ChatAdapter()
_TEXT_PARSER = dspy.ChatAdapter()


class StructuredOutputRefused(RuntimeError):
    """``structured=on`` but the endpoint accepted no schema dialect."""


def output_schema(signature: type[dspy.Signature]) -> dict[str, Any] | None:
    """The JSON schema of the signature's outputs (OpenAI strict form), or None when a field
    is an open-ended mapping that no schema can pin down."""
    if has_open_ended_mapping(signature):
        return None
    try:
        return structured_outputs_format(signature, True).model_json_schema()
    except Exception:  # pydantic cannot build a schema for some annotation: send none
        return None


def response_format(signature: type[dspy.Signature], dialect: str) -> dict[str, Any]:
    schema = output_schema(signature)
    if dialect == "json_object_schema":
        return {"type": "json_object", **({"schema": schema} if schema else {})}
    if schema is None:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": signature.__name__, "schema": schema, "strict": True}}


def refuses_format(exc: BaseException) -> bool:
    """Whether an error says the endpoint does not take this response_format."""
    if not isinstance(exc, (LMInvalidRequestError, LMProviderError)):
        return False
    status = getattr(exc, "status", None)
    if status == 422:  # a request-validation error (FastAPI servers), body unread
        return True
    text = str(exc).lower()
    # llama-cpp-python answers a json_schema response_format with a 500 naming the field
    return status in (400, 500, None) and any(
        word in text for word in ("response_format", "json_schema", "json_object", "schema", "grammar"))


def lm_for(lm: Any, dialect: str) -> Any:
    """The LM to send ``dialect`` with. llama-cpp-python's ``{"type": "json_object", "schema"}``
    has no place in DSPy's canonical request, which DSPy builds before any custom engine
    sees it: an LM on t2t's api_base engine (`trajectory2task.programs.lm.http_engine`) sends that dialect
    through its twin on DSPy's own engines (LiteLLM then), with the LM's current settings."""
    twin = getattr(lm, "dspy_engine_lm", None)
    if dialect != "json_object_schema" or twin is None:
        return lm
    # (None values are left out: DSPy's copy drops a key set to None, and its truncation
    # warning reads kwargs['temperature'])
    return twin.copy(**{k: v for k, v in lm.kwargs.items() if v is not None})


def _mode_of(lm: Any) -> str:
    tag = role_of(lm)
    return tag.settings.structured if tag is not None else "auto"


def _has_tools(signature: type[dspy.Signature]) -> bool:
    return any(f.annotation == ToolCalls for f in signature.output_fields.values())


class StructuredAdapter(dspy.JSONAdapter):
    """See the module doc. One instance serves every role and thread (state lives on the LM's role)."""

    def __init__(self) -> None:
        super().__init__(use_native_function_calling=False)

    def _prepare_response_format(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        # the dialect was chosen by __call__/acall; DSPy's own choice would skip unknown models
        return

    def _dialects(self, lm: Any) -> list[str]:
        tag = role_of(lm)
        if tag is not None and tag.dialect is not None:
            return [tag.dialect]
        return list(DIALECTS)

    @staticmethod
    def _remember(lm: Any, dialect: str) -> None:
        tag = role_of(lm)
        if tag is not None:
            tag.dialect = dialect

    def _refused(self, lm: Any, dialect: str, exc: BaseException) -> None:
        if _mode_of(lm) == "on":
            raise StructuredOutputRefused(f"--structured on: the endpoint refused the {dialect} response_format: "
                                          f"{str(exc).splitlines()[0][:200]}") from exc

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                 demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if _mode_of(lm) == "off" or _has_tools(signature):
            return _PLAIN_ADAPTER(lm, lm_kwargs, signature, demos, inputs)
        dialects = self._dialects(lm)
        for dialect in dialects:
            if dialect == PLAIN:
                break
            kwargs = {**lm_kwargs, "response_format": response_format(signature, dialect)}
            try:
                out = super().__call__(lm_for(lm, dialect), kwargs, signature, demos, inputs)
            except (LMInvalidRequestError, LMProviderError) as exc:
                if not refuses_format(exc):
                    raise
                self._refused(lm, dialect, exc)
                continue
            self._remember(lm, dialect)
            return out
        self._remember(lm, PLAIN)
        return _PLAIN_ADAPTER(lm, lm_kwargs, signature, demos, inputs)

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: type[dspy.Signature],
                    demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if _mode_of(lm) == "off" or _has_tools(signature):
            return await _PLAIN_ADAPTER.acall(lm, lm_kwargs, signature, demos, inputs)
        for dialect in self._dialects(lm):
            if dialect == PLAIN:
                break
            kwargs = {**lm_kwargs, "response_format": response_format(signature, dialect)}
            try:
                out = await super().acall(lm_for(lm, dialect), kwargs, signature, demos, inputs)
            except (LMInvalidRequestError, LMProviderError) as exc:
                if not refuses_format(exc):
                    raise
                self._refused(lm, dialect, exc)
                continue
            self._remember(lm, dialect)
            return out
        self._remember(lm, PLAIN)
        return await _PLAIN_ADAPTER.acall(lm, lm_kwargs, signature, demos, inputs)

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        try:
            return super().parse(signature, completion)
        except AdapterParseError as first:
            if "[[ ##" not in completion:
                raise
            try:  # a server that ignored the schema may still have answered in the text format
                return _TEXT_PARSER.parse(signature, completion)
            except AdapterParseError:
                raise first from None


STRUCTURED_ADAPTER = StructuredAdapter()

"""Typed contracts: pydantic models (``trajectory2task.signatures.models``) and DSPy signatures over them."""

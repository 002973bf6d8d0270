"""Typed contracts: pydantic models (``signatures.models``) and DSPy signatures over them."""

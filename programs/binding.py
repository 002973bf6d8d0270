"""An environment bound to a program at construction, kept out of DSPy's state and copies.

DSPy's optimizers deep-copy a program many times and save its predictors' state; a database
must be neither copied with it nor saved. `Bound` holds the value by reference: a deep copy
of a program shares it, and it is not a DSPy parameter, so ``save()`` never sees it.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import dspy
from pydantic import BaseModel

T = TypeVar("T")


class Bound(Generic[T]):
    def __init__(self, value: T | None = None) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> Bound[T]:
        return self  # shared by every copy of the program

    def get(self, given: T | None, program: str) -> T:
        """``given`` when a caller passes one, else the bound value; neither is an error."""
        value = given if given is not None else self.value
        if value is None:
            raise ValueError(f"{program}: no environment: construct it with env=... or pass env= to the call")
        return value


def as_prediction(result: BaseModel) -> dspy.Prediction:
    """A program's pydantic result as a ``dspy.Prediction``: each field, and ``result`` itself."""
    return dspy.Prediction(result=result, **{name: getattr(result, name) for name in type(result).model_fields})

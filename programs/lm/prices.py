"""Where prices of LM calls come from."""

from __future__ import annotations

import os

__all__ = ["ensure_local_cost_map"]


def ensure_local_cost_map() -> None:
    """Make LiteLLM (and DSPy's model metadata) read the bundled model map instead of
    fetching it over the network on import, unless the user already chose a value."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


ensure_local_cost_map()

"""Printing a run's `--estimate` (``trajectory2task.programs.lm.estimate.RunEstimate``): a table per role and one
line in all, or one JSON object."""

from __future__ import annotations

import sys
from typing import Any

from trajectory2task.output import console, print_json_line, print_table


def print_estimate(plan: Any, settings: dict[str, Any], json_out: bool, *, unit: str, title: str) -> None:
    """``settings``: role -> its ``LMSettings`` (None: the role runs offline and makes no call)."""
    models = {role: s.model for role, s in settings.items() if s is not None}
    roles = [r for r in plan.roles if r.role in models] if models else plan.roles  # offline roles call nothing
    plan = plan.model_copy(update={"roles": roles})
    for role in roles:
        config = settings.get(role.role)
        window = config.context_window if config is not None else None
        reserve = (config.max_tokens or 0) if config is not None else 0
        if window and role.max_prompt + reserve > window:
            print(f"t2t: warning: {role.role} prompts reach {role.max_prompt} tokens + max_tokens {reserve}, "
                  f"over the {window}-token window", file=sys.stderr)
    from trajectory2task.programs.lm.tokens import counting_model

    approximate = sorted({m for m in models.values() if counting_model(m)[1]})
    if approximate:
        print(f"t2t: note: tokens of {', '.join(approximate)} are counted with LiteLLM's default tokenizer "
              "(cl100k_base), an approximation: t2t does not download the model's own tokenizer",
              file=sys.stderr)
    # offline, nothing is sent: the per-role sizes say what an LM run would send
    totals = [plan.tokens(r) for r in roles] if models else []
    bounds = [plan.tokens(r, upper=True) for r in roles] if models else []
    cost, most = (plan.cost(), plan.cost(upper=True)) if models else (0.0, 0.0)
    if json_out:
        print_json_line({
            "units": plan.units, "unit": unit, "sampled": plan.sampled, "offline": not models,
            "roles": [{"role": r.role, "model": models.get(r.role), f"calls_per_{unit}": round(r.calls_per_item, 3),
                       f"max_calls_per_{unit}": r.max_calls_per_item, "prompt_tokens_mean": round(r.mean_prompt, 1),
                       "prompt_tokens_max": r.max_prompt, "completion_tokens_mean": round(r.mean_completion, 1)}
                      for r in roles],
            "calls": round(plan.calls()) if models else 0, "max_calls": plan.calls(upper=True) if models else 0,
            "prompt_tokens": round(sum(p for p, _ in totals)), "completion_tokens": round(sum(c for _, c in totals)),
            "max_prompt_tokens": round(sum(p for p, _ in bounds)),
            "max_completion_tokens": round(sum(c for _, c in bounds)),
            "cost_usd": cost, "max_cost_usd": most, "unpriced_models": plan.unpriced_models() if models else [],
            "approximate_tokenizer": approximate})
        return
    print_table(title, ["role", "model", f"calls/{unit}", "max", "prompt (mean)", "prompt (max)", "completion"],
                [(r.role, models.get(r.role, "(none: tokens if run with an LM)"), f"{r.calls_per_item:.1f}",
                  r.max_calls_per_item, f"{r.mean_prompt:,.0f}", f"{r.max_prompt:,}", f"{r.mean_completion:,.0f}")
                 for r in roles])
    if not models:
        console.print("no LM configured: this run makes no LM call (offline baselines); the table shows what an "
                      "LM run would send, counted with LiteLLM's default tokenizer")
        return
    price = (f"${cost:,.4f} (at most ${most:,.4f})" if cost is not None and most is not None else
             "cost unknown: no known price for " + ", ".join(plan.unpriced_models()))
    console.print(f"estimate: {plan.calls():,.0f} LM calls (at most {plan.calls(upper=True):,.0f} with every re-ask "
                  f"and turn allowed; a failing call is retried up to --retries times on top), "
                  f"{sum(p for p, _ in totals):,.0f} prompt + {sum(c for _, c in totals):,.0f} completion tokens "
                  f"(at most {sum(p for p, _ in bounds):,.0f} + {sum(c for _, c in bounds):,.0f}), {price}",
                  markup=False, highlight=False)

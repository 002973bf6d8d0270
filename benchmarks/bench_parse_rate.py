"""Parse rate of a real small model with and without JSON-schema constrained decoding.

Starts llama.cpp's server with SmolLM2-135M-Instruct (tests/real_model.py) and asks the
generation signatures (`ProposeExplorationCall`, `WriteTask`) for typed outputs, on inputs
from an offline exploration of a generated retail database: ``--samples`` times each, at
temperature 0.7, once as t2t sent them before structured output (DSPy's `ChatAdapter`, text
format, no schema) and once through `StructuredAdapter` (the output schema in
llama-cpp-python's ``response_format`` dialect). A sample parses when the adapter returns
the typed fields (DSPy's own JSON re-ask of the text adapter counts as part of its try).

    python benchmarks/bench_parse_rate.py [--samples 6] [--max-tokens 300]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def inputs_for_signatures() -> dict[str, tuple[type, dict]]:
    from trajectory2task.domains import get_domain
    from trajectory2task.programs.generation.exploration import BaselineExplorer
    from trajectory2task.signatures.generation import ProposeExplorationCall, WriteTask

    domain = get_domain("retail")
    env = domain.environment(domain.generate_db(0, 60))
    trajectory = None
    for seed in range(20):
        trajectory = BaselineExplorer().explore(env, seed).trajectory
        if trajectory is not None:
            break
    assert trajectory is not None, "no offline trajectory"
    steps = list(trajectory.steps)
    user_id = next((s.call.arguments.get("user_id") for s in steps if "user_id" in s.call.arguments), "")
    # trimmed inputs (the tools the trajectory used, the policy's first part): the full explorer
    # prompt is ~9.3k tokens, more than SmolLM2's window and minutes of prompt evaluation here
    used = {s.call.name for s in steps}
    schemas = [t for t in env.tool_schemas() if t["function"]["name"] in used][:4]
    policy = env.policy[:1500]
    propose = dict(domain_summary="A retail store: users, orders, products.", policy=policy,
                   tool_schemas=schemas, seed_entity=f"The customer {user_id}.",
                   exploration_goal="one successful write", trajectory=steps[:1], previous_error="")
    write = dict(trajectory=steps[:2], policy=policy, required_facts=[], previous_error="")
    return {"ProposeExplorationCall": (ProposeExplorationCall, propose), "WriteTask": (WriteTask, write)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated signature names (default: all)")
    args = parser.parse_args()

    import dspy

    from trajectory2task.programs.lm.accounting import CallLedger, role_of
    from trajectory2task.programs.lm.build import build_lm
    from trajectory2task.programs.lm.config import LMSettings
    from trajectory2task.programs.lm.structured import StructuredAdapter
    from tests.real_model import MODEL_NAME, LlamaServer, missing

    why = missing()
    if why:
        sys.exit(f"bench_parse_rate: {why}")
    cases = inputs_for_signatures()
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only.split(",")}
    figures: dict[str, dict[str, object]] = {}
    with LlamaServer(n_ctx=8192) as server:
        for mode, adapter in (("text, no schema", dspy.ChatAdapter()), ("schema-constrained", StructuredAdapter())):
            for name, (signature, inputs) in cases.items():
                ledger = CallLedger()
                lm = build_lm(LMSettings(model=MODEL_NAME, api_base=server.base_url, max_tokens=args.max_tokens,
                                         temperature=0.7, num_retries=0, timeout_s=600,
                                         structured="on" if isinstance(adapter, StructuredAdapter) else "off"),
                              role="bench", ledger=ledger)
                role_of(lm).dialect = "json_object_schema"  # what preflight finds for llama-cpp-python
                parsed = 0
                started = time.perf_counter()
                for _ in range(args.samples):
                    try:
                        with dspy.context(lm=lm, adapter=adapter):
                            dspy.Predict(signature)(**inputs)
                        parsed += 1
                    except Exception as exc:  # a parse failure (or an LM error) is a miss
                        last = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
                        figures.setdefault(f"{mode} / {name}", {})["last_error"] = last
                figures.setdefault(f"{mode} / {name}", {}).update(
                    parsed=parsed, samples=args.samples, calls=ledger.calls, prompt_tokens=ledger.prompt_tokens,
                    seconds=round(time.perf_counter() - started, 1))
    if args.json:
        print(json.dumps(figures))
        return
    for key, row in figures.items():
        print(f"{key}: parsed {row['parsed']}/{row['samples']} in {row['calls']} call(s), "
              f"~{int(row['prompt_tokens']) // max(1, int(row['calls']))} prompt tokens a call, {row['seconds']} s"
              + (f" (last failure: {row['last_error']})" if "last_error" in row else ""))


if __name__ == "__main__":
    main()

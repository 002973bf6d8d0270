"""GRPO on our retail tasks through the TRL adapter, with pass@1 before and after on held-out
retail and airline tasks.

1. retail tasks generated offline (no LM) on the *train* database (``--train-seed``);
2. held-out tasks: retail on another database (``--eval-seed``: other users, orders and
   products) and airline, a domain the model never trains on;
3. pass@1 of the base model on both held-out sets, played exactly as TRL plays a rollout
   (the `trl_environment` class: the domain's tools and ``send_message_to_user`` as tools,
   the scripted offline user, the verifier's verdict as the score), greedy decoding;
4. `GRPOTrainer(environment_factory=...)` on the train tasks, then the same pass@1.

    python benchmarks/train_grpo.py --model Qwen/Qwen3-0.6B [--train-items 8] [--eval-items 2]
        [--max-steps 50] [--num-generations 4] [--out DIR] [--json]
    python benchmarks/train_grpo.py --smoke          # a few CPU steps with a tiny random model

The model's chat template must be one TRL can parse tool calls from (Qwen2.5/Qwen3, Llama
3.1/3.2, ...). Sized for a GPU: a real model, rollouts of many turns, and the policy prompt
(~5k tokens) make CPU training impractical; ``--smoke`` only shows the loop runs end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def make_tasks(domain: str, seed: int, items: int) -> tuple[Any, list[Any]]:
    """A domain's environment over the database of ``seed`` and tasks generated on it offline."""
    from trajectory2task.programs.loop.domain_env import load_environment
    from tests.offline_tasks import generate_offline

    environment = load_environment(domain, None, seed)
    return environment, generate_offline(environment, n=items, seed=seed).kept()


def pass_at_1(model: Any, tokenizer: Any, env_class: Any, max_turns: int, max_new_tokens: int) -> dict[str, Any]:
    """Each task of the class played once, greedily, the way TRL's tool loop plays it."""
    import torch

    from trajectory2task.programs.loop.episode import parse_action
    from trajectory2task.programs.rl.trl_env import tool_schemas, trl_dataset

    tools = tool_schemas(env_class)
    per_condition: dict[str, list[float]] = {}
    for row in trl_dataset(env_class):
        env = env_class()
        opening = env.reset(**row)
        messages = row["prompt"][:-1] + [{"role": "user", "content": opening}]
        for _ in range(max_turns):
            ids = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True).to(model.device)
            with torch.no_grad():
                out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
            reply = parse_action(text)
            if not reply.tool_calls:
                break  # TRL ends the rollout at a reply without a tool call
            call = reply.tool_calls[0]
            method = getattr(env, call.name, None)
            try:
                result = method(**call.arguments) if method is not None and call.name != "reset" else \
                    f"Error: no tool {call.name}"
            except TypeError as exc:  # arguments that do not fit the tool's signature
                result = f"Error: {exc}"
            messages += [{"role": "assistant", "content": reply.content or "", "tool_calls": [
                {"type": "function", "function": {"name": call.name, "arguments": call.arguments}}]},
                {"role": "tool", "name": call.name, "content": result}]
        per_condition.setdefault(env.episode.task.condition, []).append(env.get_reward())
    scores = [s for v in per_condition.values() for s in v]
    return {"pass_at_1": sum(scores) / len(scores) if scores else None, "n": len(scores),
            "by_condition": {c: sum(v) / len(v) for c, v in sorted(per_condition.items())}}


def tiny_tool_model(directory: Path, texts: Sequence[str]) -> Path:
    """--smoke: the tests' tiny random Llama, with a chat template TRL parses tool calls from."""
    from importlib import resources

    from transformers import AutoTokenizer

    from tests.tiny_model import tiny_model

    tiny_model(directory, list(texts))
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    tokenizer.chat_template = (resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text()
    tokenizer.save_pretrained(str(directory))
    return directory


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A Hugging Face model id or directory (required unless --smoke).")
    parser.add_argument("--smoke", action="store_true", help="A few CPU steps with a tiny random model.")
    parser.add_argument("--train-items", type=int, default=8)
    parser.add_argument("--eval-items", type=int, default=2)
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=1024)
    parser.add_argument("--max-turns", type=int, default=30, help="Agent turns per pass@1 episode.")
    parser.add_argument("--learning-rate", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, help="Where the trained model goes (default: a temporary folder).")
    parser.add_argument("--json", action="store_true", help="Print the report as one JSON line.")
    args = parser.parse_args(argv)
    if args.smoke:
        args.train_items, args.eval_items, args.max_steps = 1, 1, 2
        args.num_generations, args.max_completion_length, args.max_turns = 2, 16, 2
    elif not args.model:
        parser.error("--model is required (or --smoke)")

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from trajectory2task.programs.rl.trl_env import tool_schemas, trl_dataset, trl_environment

    started = time.perf_counter()
    environment, train = make_tasks("retail", args.train_seed, args.train_items)
    held_out = {"retail": make_tasks("retail", args.eval_seed, args.eval_items),
                "airline": make_tasks("airline", 0, args.eval_items)}
    train_class = trl_environment(environment, train)
    eval_classes = {d: trl_environment(e, t) for d, (e, t) in held_out.items()}
    with tempfile.TemporaryDirectory(prefix="t2t-grpo-") as scratch:
        work = Path(scratch)
        model_path = args.model
        if args.smoke:
            texts = [json.dumps(s) for s in tool_schemas(train_class)] + [trl_dataset(train_class)[0]["prompt"][0]["content"]]
            model_path = str(tiny_tool_model(work / "tiny", texts))
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        report: dict[str, Any] = {"model": "tiny-random (smoke)" if args.smoke else args.model,
                                  "train_tasks": len(train), "held_out": {d: len(t) for d, (_, t) in held_out.items()}}
        report["before"] = {d: pass_at_1(model, tokenizer, c, args.max_turns, args.max_completion_length)
                            for d, c in eval_classes.items()}
        config = GRPOConfig(output_dir=str(args.out or work / "grpo"), max_steps=args.max_steps,
                            per_device_train_batch_size=args.num_generations, num_generations=args.num_generations,
                            max_completion_length=args.max_completion_length, learning_rate=args.learning_rate,
                            logging_steps=1, report_to="none", save_strategy="no", use_cpu=args.smoke,
                            bf16=False if args.smoke else None, seed=args.train_seed)
        trainer = GRPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(trl_dataset(train_class)),
                              processing_class=tokenizer, environment_factory=train_class)
        trainer.train()
        reward_key = f"rewards/{train_class.__name__}/mean"
        report["train_rewards"] = [h[reward_key] for h in trainer.state.log_history if reward_key in h]
        report["after"] = {d: pass_at_1(trainer.model, tokenizer, c, args.max_turns, args.max_completion_length)
                           for d, c in eval_classes.items()}
        if args.out:
            trainer.save_model(str(args.out))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()

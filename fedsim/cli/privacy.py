"""``fedsim privacy``: epsilon of DP-FedAvg, or the noise or rounds a budget allows.

``fedsim privacy --q Q --noise-multiplier Z --rounds T``  prints epsilon after T rounds;
``fedsim privacy --q Q --target-epsilon E --rounds T``    prints the noise multiplier that meets E;
``fedsim privacy --q Q --noise-multiplier Z --target-epsilon E``  prints the rounds E allows.

The accountant (and its scipy stack) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import math

from fedsim.options import ConfigError


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``privacy`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "privacy",
        help="privacy accounting of DP-FedAvg",
        description="Client-level privacy of DP-FedAvg (Poisson sampling at rate q, Gaussian "
        "noise of std z * clip_norm on the sum) with Google's dp-accounting. Give two of "
        "--noise-multiplier, --target-epsilon and --rounds; the third is printed.",
    )
    p.add_argument(
        "--q", type=float, required=True, metavar="Q", help="Poisson sampling rate of clients"
    )
    p.add_argument("--noise-multiplier", type=float, metavar="Z", help="noise std / clip norm")
    p.add_argument("--rounds", type=int, metavar="T", help="number of rounds")
    p.add_argument("--target-epsilon", type=float, metavar="E", help="privacy budget epsilon")
    p.add_argument("--delta", type=float, default=1e-5, metavar="D", help="delta (default 1e-5)")
    p.add_argument(
        "--accountant",
        choices=("rdp", "pld"),
        default="rdp",
        help="Renyi DP (fast upper bound) or privacy loss distributions (tight); default rdp",
    )
    p.set_defaults(func=run_privacy)


def _validate(args: argparse.Namespace) -> str:
    given = {
        "noise_multiplier": args.noise_multiplier is not None,
        "target_epsilon": args.target_epsilon is not None,
        "rounds": args.rounds is not None,
    }
    if sum(given.values()) != 2:
        raise ConfigError(
            "privacy: give exactly two of --noise-multiplier, --target-epsilon and --rounds"
        )
    if not 0 < args.q <= 1:
        raise ConfigError(f"--q: must be in (0, 1], got {args.q!r}")
    if not 0 < args.delta < 1:
        raise ConfigError(f"--delta: must be in (0, 1), got {args.delta!r}")
    if given["noise_multiplier"] and not (
        args.noise_multiplier >= 0 and math.isfinite(args.noise_multiplier)
    ):
        raise ConfigError(f"--noise-multiplier: must be >= 0, got {args.noise_multiplier!r}")
    if given["target_epsilon"] and not args.target_epsilon > 0:
        raise ConfigError(f"--target-epsilon: must be > 0, got {args.target_epsilon!r}")
    if given["rounds"] and args.rounds < 1:
        raise ConfigError(f"--rounds: must be >= 1, got {args.rounds!r}")
    return next(name for name, g in given.items() if not g)


def run_privacy(args: argparse.Namespace) -> int:
    """Execute ``fedsim privacy``: print the missing quantity on one line; return the exit code."""
    wanted = _validate(args)
    from fedsim.privacy import accounting

    q, delta, acc = args.q, args.delta, args.accountant
    where = f"delta = {delta:g}, q = {q:g}, {acc} accountant"
    if wanted == "target_epsilon":
        eps = accounting.epsilon(q, args.noise_multiplier, args.rounds, delta, acc)
        print(
            f"epsilon = {eps:.4f} after {args.rounds} rounds "
            f"(noise multiplier {args.noise_multiplier:g}, {where})"
        )
    elif wanted == "noise_multiplier":
        z = accounting.noise_multiplier_for_epsilon(q, args.target_epsilon, args.rounds, delta, acc)
        eps = accounting.epsilon(q, z, args.rounds, delta, acc)
        print(
            f"noise multiplier = {z:.4f} gives epsilon = {eps:.4f} <= {args.target_epsilon:g} "
            f"after {args.rounds} rounds ({where})"
        )
    else:
        t = accounting.rounds_within_budget(
            q, args.noise_multiplier, delta, args.target_epsilon, acc
        )
        eps = accounting.epsilon(q, args.noise_multiplier, t, delta, acc)
        print(
            f"rounds = {t} keep epsilon = {eps:.4f} <= {args.target_epsilon:g} "
            f"(noise multiplier {args.noise_multiplier:g}, {where})"
        )
    return 0

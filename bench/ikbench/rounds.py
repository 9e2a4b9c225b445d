"""Interleaved rounds, the loop every section compares its variants with:
each round runs every variant once, in an order shuffled anew (bench.shuffled,
seeded by --seed), so a drift in the machine's load hits all variants alike;
warm-up rounds run the same way and are not kept."""
from __future__ import annotations

from typing import Callable, Hashable, Iterable


def interleaved(bench, variants: Iterable[Hashable], rounds: int, measure: Callable, warmup: int = 0,
                after_round: Callable | None = None, before_kept: Callable | None = None) -> dict:
    """measure(variant, r) for every variant in each round r: 0..rounds-1,
    preceded by the warm-up rounds -warmup..-1, whose values are dropped.
    Returns {variant: [measure's value in each kept round]}, keys in the
    order given. after_round(done, samples), if given, runs after each kept
    round (done: kept rounds so far), for progress lines; before_kept(), if
    given, once before the first kept round (a counter's starting value)."""
    variants = list(variants)
    samples = {v: [] for v in variants}
    for r in range(-warmup, rounds):
        if r == 0 and before_kept:
            before_kept()
        for v in bench.shuffled(variants):
            value = measure(v, r)
            if r >= 0:
                samples[v].append(value)
        if r >= 0 and after_round:
            after_round(r + 1, samples)
    return samples

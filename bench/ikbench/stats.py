"""Statistics of samples: percentiles, summaries, ratios and differences with
bootstrap intervals. Standard library only (bench/soak imports it too)."""
from __future__ import annotations

import random
import statistics


def pct(xs, p):
    """Percentile with linear interpolation (numpy's default)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def summary(xs):
    return {
        "n": len(xs),
        "median": med(xs),
        "p10": pct(xs, 10),
        "p25": pct(xs, 25),
        "p75": pct(xs, 75),
        "p90": pct(xs, 90),
        "p99": pct(xs, 99),
        "min": min(xs) if xs else float("nan"),
        "max": max(xs) if xs else float("nan"),
    }


def ratio_ci(a, b, stat=med, n_boot=2000, seed=1):
    """stat(a)/stat(b) with a 95% bootstrap interval (each sample resampled)."""
    if not a or not b:
        return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan")}
    rnd = random.Random(seed)
    r = stat(a) / stat(b)
    boots = []
    for _ in range(n_boot):
        ra = [a[rnd.randrange(len(a))] for _ in a]
        rb = [b[rnd.randrange(len(b))] for _ in b]
        boots.append(stat(ra) / stat(rb))
    return {"ratio": r, "lo": pct(boots, 2.5), "hi": pct(boots, 97.5)}


def paired_ratio_ci(a, b, n_boot=2000, seed=1):
    """Median of the per-round ratios a[i]/b[i] (the variants ran back to back
    in round i, so a drift in the machine's load cancels), with a 95 %
    bootstrap interval over rounds."""
    rs = [x / y for x, y in zip(a, b) if y]
    if not rs:
        return {"ratio": float("nan"), "lo": float("nan"), "hi": float("nan")}
    rnd = random.Random(seed)
    boots = [med([rs[rnd.randrange(len(rs))] for _ in rs]) for _ in range(n_boot)]
    return {"ratio": med(rs), "lo": pct(boots, 2.5), "hi": pct(boots, 97.5), "rounds": len(rs)}


def diff_ci(a, b, stat=med, n_boot=2000, seed=1):
    """stat(a)-stat(b) with a 95% bootstrap interval."""
    rnd = random.Random(seed)
    d = stat(a) - stat(b)
    boots = []
    for _ in range(n_boot):
        ra = [a[rnd.randrange(len(a))] for _ in a]
        rb = [b[rnd.randrange(len(b))] for _ in b]
        boots.append(stat(ra) - stat(rb))
    return {"diff": d, "lo": pct(boots, 2.5), "hi": pct(boots, 97.5)}

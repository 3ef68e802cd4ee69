#!/usr/bin/env python3
"""LRU against the L1 on fresh traces of one trace's shape.

Not shipped code: the 2_pools paragraph of docs/performance.md.  Reads a
trace, takes its HOT most-read keys as one pool and the rest as another,
and draws DRAWS new traces of the same length in which each access picks
the hot pool with the share it has in the trace and then a key of that
pool uniformly at random.  Each draw is replayed through an exact LRU here
and through the L1 by `aside trace` (RUNS runs, averaged), and the script
prints each pair and the mean difference with its standard error.

Shuffling the trace's own accesses (shuffled_lru.py) keeps every key's
count, so a key read often early is read less later, which a policy that
counts reads pays for; fresh draws have no such tie, so they say what any
policy can expect on traces like this one.

    bench/models/fresh_draws.py TRACE CAPACITY HOT DRAWS ASIDE [RUNS]
    bench/models/fresh_draws.py ../shared/traces/lirs-2_pools.trace.gz \\
        1000 100 24 build-rel/aside 2
"""
import gzip
import os
import random
import re
import subprocess
import sys
import tempfile
from collections import Counter

from shuffled_lru import lru_ratio  # beside this script


def l1_ratio(aside, path, capacity):
    out = subprocess.run([aside, "trace", "--capacity", str(capacity), path],
                         check=True, capture_output=True, text=True).stdout
    return float(re.search(r"hit_ratio=([0-9.]+)", out).group(1))


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__.strip().splitlines()[-3].strip())
    path, capacity, hot = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    draws, aside = int(sys.argv[4]), sys.argv[5]
    runs = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        keys = [int(line) for line in f if line.strip()]
    counts = Counter(keys)
    hot_keys = [k for k, _ in counts.most_common(hot)]
    hot_set = set(hot_keys)
    cold_keys = sorted(k for k in counts if k not in hot_set)
    share = sum(counts[k] for k in hot_keys) / len(keys)
    print("%d accesses, %d hot keys read %.4f of the time, %d others" %
          (len(keys), len(hot_keys), share, len(cold_keys)))
    diffs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(draws):
            rng = random.Random(seed)
            trace = [rng.choice(hot_keys) if rng.random() < share
                     else rng.choice(cold_keys) for _ in keys]
            name = os.path.join(tmp, "draw%d.trace" % seed)
            with open(name, "w") as f:
                f.write("\n".join(map(str, trace)) + "\n")
            lru = lru_ratio(trace, capacity)
            l1 = sum(l1_ratio(aside, name, capacity)
                     for _ in range(runs)) / runs
            diffs.append(l1 - lru)
            print("draw %2d: LRU %.4f, L1 %.4f, L1 - LRU %+.4f" %
                  (seed, lru, l1, l1 - lru))
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0
    print("L1 - LRU over %d draws: mean %+.5f, standard error %.5f, "
          "%.4f to %+.4f" % (n, mean, (var / n) ** 0.5, min(diffs),
                             max(diffs)))


if __name__ == "__main__":
    main()

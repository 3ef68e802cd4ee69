#!/usr/bin/env python3
"""How much of LRU's hit ratio on a trace is the order its keys happened to
come in.

Not shipped code: the analysis behind the 2_pools paragraphs of
docs/performance.md.  Keeps the accesses of the HOT most-read keys where
they are and shuffles the other accesses among their own positions (seeds
0 to RUNS - 1), then prints LRU's hit ratio on the trace as it is and the
mean and range over the shuffles.  On a trace whose other keys are drawn at
random, no policy can know which of them come back, so the spread over the
shuffles is the spread of luck a bar taken from one order carries.

    bench/models/shuffled_lru.py TRACE CAPACITY HOT [RUNS]
"""
import gzip
import random
import sys
from collections import Counter, OrderedDict


def lru_ratio(keys, capacity):
    cache = OrderedDict()
    hits = 0
    for k in keys:
        if k in cache:
            hits += 1
            cache.move_to_end(k)
            continue
        cache[k] = True
        if len(cache) > capacity:
            cache.popitem(last=False)
    return hits / len(keys)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    path, capacity, hot = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        keys = [int(line) for line in f if line.strip()]
    top = {k for k, _ in Counter(keys).most_common(hot)}
    where = [i for i, k in enumerate(keys) if k not in top]
    print("LRU, the trace as it is: %.5f" % lru_ratio(keys, capacity))
    ratios = []
    for seed in range(runs):
        rest = [keys[i] for i in where]
        random.Random(seed).shuffle(rest)
        shuffled = list(keys)
        for i, k in zip(where, rest):
            shuffled[i] = k
        ratios.append(lru_ratio(shuffled, capacity))
    print("LRU, %d shuffles of the accesses outside the %d most read keys: "
          "mean %.5f, %.5f to %.5f" % (runs, hot, sum(ratios) / runs,
                                       min(ratios), max(ratios)))


if __name__ == "__main__":
    main()

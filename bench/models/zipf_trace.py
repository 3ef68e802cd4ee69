#!/usr/bin/env python3
"""A Zipf key trace for `aside trace` and the peer's `hitratio`.

Not shipped code: the Zipf rows of docs/performance.md.  Prints READS keys,
one a line, drawn from KEYS keys (0 to KEYS - 1) with P(rank i) proportional
to 1 / i^THETA, from a generator seeded with SEED, so that every run of the
same arguments prints the same trace.

    bench/models/zipf_trace.py THETA KEYS READS SEED > z.trace
"""
import bisect
import random
import sys


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    theta, keys = float(sys.argv[1]), int(sys.argv[2])
    reads, seed = int(sys.argv[3]), int(sys.argv[4])
    cumulative, total = [], 0.0
    for rank in range(1, keys + 1):
        total += 1 / rank ** theta
        cumulative.append(total)
    draw = random.Random(seed)
    out = sys.stdout
    for _ in range(reads):
        out.write("%d\n" % bisect.bisect_left(cumulative, draw.random() * total))


if __name__ == "__main__":
    main()

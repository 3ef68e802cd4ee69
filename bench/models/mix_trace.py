#!/usr/bin/env python3
"""Zipf traces mixed with something else, for `aside trace` and the peer's
`hitratio`.

Not shipped code: the mixed rows of docs/performance.md.  Prints one key a
line, READS reads (2,000,000 unless given, 8,000,000 for fresh; and a scan's
keys), from a generator seeded with SEED, so that every run of the same
arguments prints the same trace.

    scan    Zipf 0.9 over 100,000 keys; after every 200,000 reads, a scan
            of 20,000 keys never read before
    shift   Zipf 0.9 over 100,000 keys, the ranking moved 50,000 keys on
            every 500,000 reads (popular keys go cold, new ones get hot)
    noise   half Zipf 0.99 over 100,000 keys, half uniform over 1,000,000
            other keys
    zloop   Zipf 0.8 over 50,000 keys, every fourth read the next key of
            a loop over 8,000 other keys
    fresh   a new key every tenth read, and each read takes a key by how
            lately it came, Zipf 0.8 over the newest 100,000 (popularity
            that fades, as in a feed)

    bench/models/mix_trace.py KIND SEED [READS] > trace
"""
import bisect
import random
import sys

OTHER = 10_000_000  # keys that are not the Zipf workload's start here


def zipf(draw, theta, keys):
    cumulative, total = [], 0.0
    for rank in range(1, keys + 1):
        total += 1 / rank ** theta
        cumulative.append(total)
    return lambda: bisect.bisect_left(cumulative, draw.random() * total)


def keys(kind, draw, reads):
    if kind == "scan":
        z, fresh = zipf(draw, 0.9, 100_000), OTHER
        for n in range(reads):
            yield z()
            if n % 200_000 == 199_999:
                yield from range(fresh, fresh + 20_000)
                fresh += 20_000
    elif kind == "shift":
        z = zipf(draw, 0.9, 100_000)
        for n in range(reads):
            yield z() + 50_000 * (n // 500_000)
    elif kind == "noise":
        z = zipf(draw, 0.99, 100_000)
        for _ in range(reads):
            yield z() if draw.random() < 0.5 else \
                OTHER + draw.randrange(1_000_000)
    elif kind == "zloop":
        z, at = zipf(draw, 0.8, 50_000), 0
        for n in range(reads):
            if n % 4 == 0:
                yield OTHER + at
                at = (at + 1) % 8_000
            else:
                yield z()
    elif kind == "fresh":
        z, newest = zipf(draw, 0.8, 100_000), 100_000
        for n in range(reads):
            if n % 10 == 0:
                newest += 1
            yield newest - z()
    else:
        sys.exit("mix_trace: no mix %r" % kind)


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    kind = sys.argv[1]
    try:
        draw = random.Random(int(sys.argv[2]))
        reads = int(sys.argv[3]) if len(sys.argv) == 4 else \
            8_000_000 if kind == "fresh" else 2_000_000
    except ValueError:
        sys.exit("mix_trace: SEED and READS are whole numbers")
    if reads < 0:
        sys.exit("mix_trace: READS cannot be negative")
    out = sys.stdout
    for k in keys(kind, draw, reads):
        out.write("%d\n" % k)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Synthetic key traces made of phases, for `aside trace` and the peer's
`hitratio`.

Not shipped code: the synthetic rows of docs/performance.md, the burst tests
of tests/unit/test_mem.c as traces.  Prints one key a line, the phases one
after the other.  Each phase has keys of its own, except `hot`, whose keys
are the same in every `hot` phase (so that a later one reads them again).

    once:N            N keys, each read once (a scan)
    loop:K:R          K keys in order, R rounds
    hot:K:R           as loop, with keys shared by every hot phase
    bursts:STEPS:G    at step i, key i, i - G, i - 2G and i - 3G: each key
                      read four times, G steps apart, then never again

    bench/models/phases.py PHASE... > trace
    bench/models/phases.py loop:1000:40 bursts:12000:100 > loop-then-bursts.trace
"""
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__.strip().splitlines()[-2].strip())
    out = sys.stdout
    for n, phase in enumerate(sys.argv[1:], start=1):
        kind, *args = phase.split(":")
        nums = [int(a) for a in args]
        base = 0 if kind == "hot" else n * 10_000_000
        if kind == "once" and len(nums) == 1:
            keys = range(nums[0])
        elif kind in ("loop", "hot") and len(nums) == 2:
            keys = [k for _ in range(nums[1]) for k in range(nums[0])]
        elif kind == "bursts" and len(nums) == 2:
            steps, gap = nums
            keys = [i - back for i in range(steps)
                    for back in range(0, 3 * gap + 1, gap) if i - back >= 0]
        else:
            sys.exit("phases: cannot read %r" % phase)
        for k in keys:
            out.write("%d\n" % (base + k))


if __name__ == "__main__":
    main()

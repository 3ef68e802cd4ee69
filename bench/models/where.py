#!/usr/bin/env python3
"""Where LIRS gains on W-TinyLFU, access by access, and why.

Not shipped code: the analysis behind the multi2 paragraphs of
docs/performance.md.  Runs exact LIRS (lirs.py, HIR share 1%) and the
W-TinyLFU model with the L1's adaptive window (caffeine26.py, counting from
the start, no random admission, every read recorded) on one trace, and
prints:

- the hits one policy has and the other has not, by the key's number of
  accesses in the whole trace (bands of 5);
- the keys of the band that gains most, if they repeat in order (a loop):
  how many, how often, each policy's hits on them, and how often W-TinyLFU's
  filter turned one of them away;
- W-TinyLFU's contests that were ties, split by LIRS's test (is the gap
  between the candidate's last two accesses shorter than the time since the
  victim's last access?) and by which of the two was in fact used again
  first.

    bench/models/where.py TRACE CAPACITY
"""
import bisect
import sys
from collections import Counter, defaultdict

import caffeine26
import lirs


class Record:
    def __init__(self):
        self.hit = []
        self.contests = []

    def access(self, now, key, hit):
        self.hit.append(hit)

    def contest(self, now, cand, victim, cf, vf, won):
        self.contests.append((now, cand, victim, cf, vf))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: where.py TRACE CAPACITY")
    trace, cap = lirs.read_trace(sys.argv[1]), int(sys.argv[2])
    rec = Record()
    w = caffeine26.caffeine(trace, cap, lazy=False, drops=False, rand=False,
                            adapt=True, record=rec)
    wh = rec.hit
    print(f"W-TinyLFU, adaptive window: {w:.4f}")
    lh = []
    print(f"LIRS, HIR 1%: {lirs.lirs(trace, cap, record=lh):.4f}")
    n = Counter(trace)
    band = Counter()
    for i, k in enumerate(trace):
        band[min(n[k], 50) // 5 * 5] += lh[i] - wh[i]
    print("LIRS's net gain in hits, by the key's accesses in the trace:")
    print("  " + ", ".join(f"{b}-{b + 4}: {band[b]:+d}"
                           for b in sorted(band)))
    top = max(band, key=band.get)
    group = {k for k in n if top <= min(n[k], 50) < top + 5}
    at = [i for i, k in enumerate(trace) if k in group]
    seq = [trace[i] for i in at]
    first = [j for j, k in enumerate(seq) if k == seq[0]]
    period = (first[-1] - first[0]) / max(1, len(first) - 1)
    span = (at[-1] - at[0]) / max(1, len(first) - 1)
    print(f"keys with {top}-{top + 4} accesses: {len(group)}, "
          f"{len(at)} accesses; the first comes back every "
          f"{period:.0f} of theirs, {span:.0f} accesses of the trace; "
          f"hits: LIRS {sum(lh[i] for i in at)}, "
          f"W-TinyLFU {sum(wh[i] for i in at)}")
    away = Counter()
    for t, c, v, cf, vf in rec.contests:
        if c in group and cf <= vf:
            away["tie" if cf == vf else "fewer"] += 1
    print(f"  turned away by the filter: {sum(away.values())} times, "
          f"{away['tie']} on a tie, {away['fewer']} counted fewer")
    times = defaultdict(list)
    for i, k in enumerate(trace):
        times[k].append(i)

    def next_use(k, t):
        p = times[k]
        j = bisect.bisect_right(p, t)
        return p[j] - t if j < len(p) else len(trace)

    def last_before(k, t):
        p = times[k]
        j = bisect.bisect_right(p, t) - 1
        return p[j]

    table = Counter()
    for t, c, v, cf, vf in rec.contests:
        if cf != vf:
            continue
        pc = times[c]
        j = bisect.bisect_right(pc, t) - 1
        irr = pc[j] - pc[j - 1] if j > 0 else len(trace)
        test = irr < t - last_before(v, t)
        first_back = "candidate" if next_use(c, t) < next_use(v, t) \
            else "victim"
        table[(test, first_back)] += 1
    print("ties (W-TinyLFU rejects the candidate on each):")
    for test in (True, False):
        print(f"  LIRS's test says {'candidate' if test else 'victim'}: "
              f"candidate back first {table[(test, 'candidate')]}, "
              f"victim back first {table[(test, 'victim')]}")


if __name__ == "__main__":
    main()

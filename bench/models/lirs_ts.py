#!/usr/bin/env python3
"""LIRS as src/tiers/mem.c could run it, to judge a port before writing one.

Not shipped code: a reference simulation.  bench/models/lirs.py is exact
LIRS (a recency stack, pruned, moved on every hit).  The L1 cannot run
that: its readers take no lock and only count their hits in the entry, and
the policy sees those counts later, when an entry reaches the old end of a
queue.  This model keeps to what the L1 could do:

- no stack.  An entry is "in the stack" if its last access is more recent
  than the oldest LIR entry's, so a stamp per entry (and per remembered
  non-resident key) says it; the stamps come from a clock of misses, the
  only events the policy sees as they happen;
- hits are deferred: a hit only counts, and the policy applies it when the
  entry reaches the bottom of the LIR list (it goes back to the top) or the
  front of the HIR queue (it is promoted to LIR if it is still in the
  stack, or if it was hit twice since it was queued, since its second hit
  then found it in the stack; else it goes back to the end);
- non-resident HIR keys are remembered with their stamp, oldest forgotten
  first, up to --history x capacity of them;
- the HIR share adapts as the L1's window does (two ghosts of a quarter of
  the capacity: HIR entries evicted without ever being LIR grow it by
  --grow entries, demoted ones shrink it by one);
- --shards splits the keys by a seeded hash, each shard with its share of
  the capacity, as mem:// does;
- --filter strict|ties puts a frequency filter in front of the HIR queue,
  as TinyLFU's is in front of W-TinyLFU's main area: a new key that would
  be queued (not one found in the stack, which becomes LIR) replaces the
  queue's next victim only if it was seen more often lately (exact counts
  of up to 15, halved every 10 x capacity accesses: an ideal sketch);
  strict turns it away on a tie too, ties lets it in.  A key turned away
  is remembered as non-resident, so its next access may find it in the
  stack.

    bench/models/lirs_ts.py [--grow G] [--history H] [--shards S]
        [--seed N] [--filter strict|ties] TRACE CAPACITY [TRACE CAPACITY...]
"""
import argparse
from collections import OrderedDict

from lirs import Ghost, trace_pairs  # the models' shared pieces


def lirs_ts(trace, cap, grow=1.5, history=3.0, hir_share=0.01, filt=None):
    hir = max(1.0, float(int(cap * hir_share)))
    lir = OrderedDict()   # key -> stamp; the oldest (the bottom) first
    queue = OrderedDict() # resident HIR key -> stamp; the next victim first
    gone = OrderedDict()  # non-resident key -> stamp; the oldest first
    counts = {}           # hits not yet applied
    was_lir = set()
    fresh, demoted = Ghost(cap // 4), Ghost(cap // 4)
    hits = clock = 0
    freq, seen, period = {}, 0, 10 * cap  # for --filter

    def count(k):
        nonlocal seen, freq
        freq[k] = min(15, freq.get(k, 0) + 1)
        seen += 1
        if seen >= period:
            seen = 0
            freq = {a: b // 2 for a, b in freq.items() if b // 2}

    def turned_away(x):
        """Whether the filter keeps x out, in favour of the next victim."""
        stamp = gone.get(x)
        if not filt or not queue or (stamp is not None and stamp > bottom()):
            return False
        h = next(iter(queue))
        if counts.get(h, 0):
            return False  # a hit not yet applied: not the victim
        fx, fh = freq.get(x, 0), freq.get(h, 0)
        return fx < fh or (fx == fh and filt == "strict")

    def bottom():
        """The oldest LIR entry's stamp, once hit ones have gone back up."""
        while lir:
            b = next(iter(lir))
            if not counts.pop(b, 0):
                return lir[b]
            del lir[b]
            lir[b] = clock
        return -1

    def demote():
        """The oldest LIR entry becomes HIR, at the end of the queue."""
        bottom()
        b, stamp = lir.popitem(last=False)
        queue[b] = stamp
        was_lir.add(b)

    def balance():
        while lir and len(lir) > cap - int(hir):
            demote()

    for x in trace:
        if filt:
            count(x)
        if x in lir or x in queue:
            hits += 1
            counts[x] = counts.get(x, 0) + 1
            continue
        clock += 1
        if fresh.take(x):
            hir = min(cap - 1.0, hir + grow)
        elif demoted.take(x):
            hir = max(1.0, hir - 1)
        if len(lir) + len(queue) < cap and len(lir) < cap - int(hir):
            gone.pop(x, None)
            lir[x] = clock
            continue
        if len(lir) + len(queue) >= cap and turned_away(x):
            gone.pop(x, None)
            gone[x] = clock
            if len(gone) > history * cap:
                gone.popitem(last=False)
            continue
        while len(lir) + len(queue) >= cap:
            if not queue:
                demote()  # every entry is LIR
                continue
            h = next(iter(queue))
            n = counts.pop(h, 0)
            stamp = queue.pop(h)
            if n:
                if n >= 2 or stamp > bottom():
                    lir[h] = clock
                    was_lir.discard(h)
                    balance()
                else:
                    queue[h] = clock
                continue
            gone[h] = stamp
            if len(gone) > history * cap:
                gone.popitem(last=False)
            (demoted if h in was_lir else fresh).add(h)
            was_lir.discard(h)
        stamp = gone.pop(x, None)
        if stamp is not None and stamp > bottom():
            lir[x] = clock
            balance()
        else:
            queue[x] = clock
    return hits


def sharded(trace, cap, shards, seed, **kw):
    parts = [[] for _ in range(shards)]
    mult = 0x9E3779B97F4A7C15 ^ (seed * 0x632BE59BD9B4E019)
    for k in trace:
        h = ((k + seed) * mult) & 0xFFFFFFFFFFFFFFFF
        parts[(h >> 40) % shards].append(k)
    hits = 0
    for i, p in enumerate(parts):
        hits += lirs_ts(p, cap // shards + (i < cap % shards), **kw)
    return hits / len(trace)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grow", type=float, default=1.5)
    ap.add_argument("--history", type=float, default=3.0)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--filter", choices=["strict", "ties"], default=None)
    a, pairs = trace_pairs(ap)
    for name, trace, cap in pairs:
        r = sharded(trace, cap, a.shards, a.seed,
                    grow=a.grow, history=a.history, filt=a.filter)
        print(f"trace={name} capacity={cap} shards={a.shards} "
              f"hit_ratio={r:.4f}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A model of the peer's policy, Caffeine 2.6.2, as the shared traces' bar
measures it (one thread, maintenance run on the caller's thread), to find
which of its details the L1 must share to score as it does.

Not shipped code: a reference simulation, written from the behaviour of the
2.6.2 jar (its bytecode read with javap), not from its source.  It has no
hill climber: 2.6.2 keeps its window ("eden") at 1% of the capacity.

    bench/models/caffeine26.py [--seed N] [--runs R] [--no-lazy]
        [--lazy-at F] [--lazy-what both|count|reorder] [--no-drops]
        [--no-random] [--window PCT] [--adapt] [--tie-irr]
        TRACE CAPACITY [...]

What it models:
- eden (1%) -> probation -> protected (80% of the main area), exact LRU
  queues; a read moves an entry to its queue's young end, a read in
  probation promotes it, demoting protected's oldest to probation's young
  end while protected is over its share.
- On a fill over capacity, eden's overflow moves to probation's young end
  (the candidates); each candidate is weighed against probation's oldest
  (the victim) by the sketch: the candidate wins if it is more frequent;
  else, if its frequency is above 5, it wins at random 1 time in 128.
- The sketch: 4-bit counters, 16 to a 64-bit word, as many words as the
  capacity rounded up to a power of two; 4 rows, a counter per row in one
  word each; halved (and its sample count reduced by a quarter of the odd
  counters) every 10 x capacity increments that raised a counter.
- --no-lazy: count from the start.  Caffeine allocates the sketch only when
  the cache is first half full; until then reads are not even recorded
  (no reordering, no counting).
  --lazy-at moves that point (a fraction of the capacity); --lazy-what
  count keeps the reordering and drops only the counting before it,
  --lazy-what reorder the other way round (the counts are applied then).
- --window sets eden's share (percent); --adapt moves it as the L1 moves
  its window, by two ghosts of a quarter of the capacity (candidates the
  filter turned away: +1 entry; main-area victims: -1 entry).
- --no-drops: record every read.  Caffeine records reads in a ring of 16
  and drains it when a write happens or the ring is full; the read that
  finds it full is dropped, so in a run of hits one read in 17 is lost.
- --no-random: never admit a losing candidate at random.
- --tie-irr: on a tie, admit the candidate if the gap between its last two
  accesses is shorter than the time since the victim's last access (LIRS's
  test, with exact times the L1 would not have).

caffeine() takes a `record` object (see where.py): it is told of every
access, hit or not, and of every contest between a candidate and a victim.
"""
import argparse
import random
from collections import OrderedDict

from lirs import Ghost, trace_pairs  # the models' shared pieces

M32 = 0xFFFFFFFF
M64 = 0xFFFFFFFFFFFFFFFF
ROW_SEEDS = [0xC3A5C85C97CB3127, 0xB492B66FBE98F273,
             0x9AE16A3B2F90404F, 0xCBF29CE484222325]


def s32(x):
    x &= M32
    return x - (1 << 32) if x & 0x80000000 else x


def s64(x):
    x &= M64
    return x - (1 << 64) if x & (1 << 63) else x


class Sketch:
    def __init__(self, seed):
        self.seed = s32(seed | 1)
        self.table = None

    def init(self, capacity):
        n = 1
        while n < capacity:
            n <<= 1
        self.table = [0] * n
        self.mask = n - 1
        self.sample = 10 * capacity
        self.size = 0

    def _spread(self, key):
        x = s32(key ^ (key >> 32))  # Long.hashCode
        x = s32((((x & M32) >> 16) ^ x) * 0x45D9F3B)
        x = s32((((x & M32) >> 16) ^ x) * self.seed)
        return s32(((x & M32) >> 16) ^ x)

    def _slots(self, key):
        h = self._spread(key)
        start = (h & 3) << 2
        for i in range(4):
            v = s64(s64(ROW_SEEDS[i]) * h)
            v = s64(v + (v >> 32))
            yield (v & M32) & self.mask, (start + i) << 2

    def frequency(self, key):
        if self.table is None:
            return 0
        return min((self.table[i] >> off) & 15 for i, off in self._slots(key))

    def increment(self, key):
        if self.table is None:
            return
        added = False
        for i, off in self._slots(key):
            if (self.table[i] >> off) & 15 != 15:
                self.table[i] += 1 << off
                added = True
        if added:
            self.size += 1
            if self.size == self.sample:
                odd = 0
                for i, w in enumerate(self.table):
                    odd += bin(w & 0x1111111111111111).count("1")
                    self.table[i] = (w >> 1) & 0x7777777777777777
                self.size = (self.size >> 1) - (odd >> 2)


def caffeine(trace, cap, seed=1, lazy=True, drops=True, rand=True,
             window=1.0, adapt=False, lazy_at=0.5, lazy_what="both",
             tie_irr=False, record=None):
    rng = random.Random(seed)
    sketch = Sketch(rng.getrandbits(32))
    eden_max = cap - int(cap * (1 - window / 100))
    prot_max = int((cap - eden_max) * 0.8)
    rejected, evicted = Ghost(cap // 4), Ghost(cap // 4)
    eden, prob, prot = OrderedDict(), OrderedDict(), OrderedDict()
    where = {}  # key -> 'e', 'p' or 'P'
    ring = []  # reads waiting to be applied
    pending = []
    hits = 0

    def apply_read(k):
        q = where.get(k)
        if q is None:
            return  # evicted since it was read
        sketch.increment(k)
        if q == "e":
            eden.move_to_end(k)
        elif q == "P":
            prot.move_to_end(k)
        else:
            del prob[k]
            prot[k] = True
            where[k] = "P"
            while len(prot) > prot_max:
                d, _ = prot.popitem(last=False)
                prob[d] = True
                where[d] = "p"

    def drain():
        for k in ring:
            apply_read(k)
        ring.clear()

    last, gap = {}, {}  # access times, for --tie-irr
    now = -1

    def admit(cand, victim):
        cf, vf = sketch.frequency(cand), sketch.frequency(victim)
        won = cf > vf or (tie_irr and cf == vf and
                          gap.get(cand, now + 1) < now - last[victim])
        if record:
            record.contest(now, cand, victim, cf, vf, won)
        if won:
            return True
        if cf <= 5 or not rand:
            return False
        return rng.getrandbits(32) & 127 == 0

    for k in trace:
        now += 1
        if k in last:
            gap[k] = now - last[k]
        last[k] = now
        if record:
            record.access(now, k, k in where)
        if k in where:
            hits += 1
            if sketch.table is None and lazy:
                if lazy_what == "count":  # reorder, but count nothing
                    apply_read(k)
                elif lazy_what == "reorder":  # count, but reorder nothing
                    pending.append(k)
                continue  # not recorded before the sketch exists
            if not drops:
                apply_read(k)
            elif len(ring) < 16:
                ring.append(k)
            else:
                drain()  # this read is the one lost
            continue
        # a put: drain reads, add to eden, count, evict
        drain()
        if adapt:
            if rejected.take(k):
                eden_max = min(cap, eden_max + 1)
            elif evicted.take(k):
                eden_max = max(0, eden_max - 1)
            prot_max = int((cap - eden_max) * 0.8)
        eden[k] = True
        where[k] = "e"
        if sketch.table is None and (
                not lazy or len(where) >= int(cap * lazy_at)):
            sketch.init(cap)
            for p in pending:
                sketch.increment(p)
            pending.clear()
        sketch.increment(k)
        candidates = []
        while len(eden) > eden_max:
            c, _ = eden.popitem(last=False)
            prob[c] = True
            where[c] = "p"
            candidates.append(c)
        # evictFromMain: candidates from probation's young end, victims
        # from its old end (then protected's, then eden's)
        ci = len(candidates) - 1
        while len(where) > cap:
            cand = candidates[ci] if ci >= 0 else None
            if prob:
                victim = next(iter(prob))
                if victim == cand:
                    victim = None
            elif prot:
                victim = next(iter(prot))
            else:
                victim = next(iter(eden))
            if cand is None or victim is None:
                gone = cand if victim is None else victim
                if gone == victim:
                    evicted.add(gone)
                if gone == cand:
                    ci -= 1
            else:
                ci -= 1
                gone = victim if admit(cand, victim) else cand
                (evicted if gone == victim else rejected).add(gone)
            for q in (eden, prob, prot):
                q.pop(gone, None)
            del where[gone]
    return hits / len(trace)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-lazy", dest="lazy", action="store_false")
    ap.add_argument("--no-drops", dest="drops", action="store_false")
    ap.add_argument("--no-random", dest="rand", action="store_false")
    ap.add_argument("--window", type=float, default=1.0)
    ap.add_argument("--adapt", action="store_true")
    ap.add_argument("--tie-irr", action="store_true")
    ap.add_argument("--lazy-at", type=float, default=0.5)
    ap.add_argument("--lazy-what", default="both",
                    choices=["both", "count", "reorder"])
    a, pairs = trace_pairs(ap)
    for name, trace, cap in pairs:
        rs = [caffeine(trace, cap, a.seed + r, a.lazy, a.drops, a.rand,
                       a.window, a.adapt, a.lazy_at, a.lazy_what, a.tie_irr)
              for r in range(a.runs)]
        print(f"trace={name} capacity={cap} hit_ratio={sum(rs) / len(rs):.4f}"
              f" min={min(rs):.4f} max={max(rs):.4f}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A model of the L1's two-ghost window beside window sizes chosen by paired
simulations from the cache's own state, to judge whether they pick better
windows than the ghosts do.

Not shipped code: a reference simulation (exact LRU queues, one shard, every
read recorded, no sharding or concurrency) for the round of
docs/performance.md *Windows chosen by paired simulations*.  Prints one line
per trace: the mean hit ratio over the seeds, the window at the end, and how
many times the paired simulations moved it.

    bench/models/rollout.py [--mode MODE] [--epoch E] [--delta D]
        [--margin M] [--fixed F] [--decay D] [--seeds N] [--log]
        TRACE CAPACITY [...]

MODE is one of:
    ghost      the L1's rule: a miss on a key the filter turned away lately
               grows the window by one entry, a miss on a main-area victim
               shrinks it by one (ghosts of a quarter of the capacity each)
    fixed      the window held at F of the capacity
    roll       no ghosts.  Once the cache is full, every E x capacity reads
               the cache is copied twice, one copy with the window D of the
               capacity larger and one with it D smaller; all three replay
               the next E x capacity reads, and the cache takes the window
               of the copy that hit most, if it hit more than the cache did
               by more than M of those reads
    ghostroll  the ghosts, and the paired copies as in roll
    sel        as roll, the copies at windows of 1, 10, 30, 50, 70 and 90%
    ghostsel   the ghosts, and the copies as in sel
    follow     two shadows run from the start beside the cache: the ghosts'
               window (A) and a window fixed at F (B).  Each scores its hits,
               decayed by --decay a read (1: summed).  When B's score passes
               A's by more than M x capacity hits, the cache fixes its window
               at B's; when A's passes B's by as much, it takes A's window
               and the ghosts again (docs/performance.md, *Following a
               shadow with a large window*)

The copies share the cache's sketch (every read counts once, hit or miss,
so its counts do not depend on what is resident) and draw their own random
admissions.  --log prints each decision to stderr.
"""
import argparse
import copy
import os
import random
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from caffeine26 import Sketch  # noqa: E402  the models' shared pieces
import lirs  # noqa: E402
from lirs import trace_pairs  # noqa: E402

SHARES = (0.01, 0.1, 0.3, 0.5, 0.7, 0.9)


class Ghost(lirs.Ghost):
    """The models' ghost, which a copy of the cache copies too."""

    def clone(self):
        g = Ghost(self.size)
        g.keys = self.keys.copy()
        return g


class Policy:
    """W-TinyLFU: window, probation, protected (80% of the main area)."""

    def __init__(self, cap, sketch, rng, window, ghosts):
        self.cap, self.sketch, self.rng, self.ghosts = cap, sketch, rng, ghosts
        self.set_window(window)
        self.rejected, self.evicted = Ghost(cap // 4), Ghost(cap // 4)
        self.q = {"w": OrderedDict(), "p": OrderedDict(), "P": OrderedDict()}
        self.where = {}
        self.hits = 0

    def set_window(self, w):
        self.window = max(0, min(self.cap, w))
        self.prot_max = int((self.cap - self.window) * 0.8)

    def clone(self, window):
        c = copy.copy(self)
        c.rng = random.Random(self.rng.getrandbits(32))
        c.rejected, c.evicted = self.rejected.clone(), self.evicted.clone()
        c.q = {n: d.copy() for n, d in self.q.items()}
        c.where = dict(self.where)
        c.hits = 0
        c.set_window(window)
        return c

    def _move(self, k, to):
        del self.q[self.where[k]][k]
        self.q[to][k] = True
        self.where[k] = to

    def _demote(self):
        prot = self.q["P"]
        while len(prot) > self.prot_max:
            self._move(next(iter(prot)), "p")

    def access(self, k):
        w, prob, prot = self.q["w"], self.q["p"], self.q["P"]
        q = self.where.get(k)
        if q is not None:
            self.hits += 1
            if q == "p":
                self._move(k, "P")
                self._demote()
            else:
                self.q[q].move_to_end(k)
            return
        if self.ghosts:
            if self.rejected.take(k):
                self.set_window(self.window + 1)
            elif self.evicted.take(k):
                self.set_window(self.window - 1)
        w[k] = True
        self.where[k] = "w"
        cands = []
        while len(w) > self.window:
            c = next(iter(w))
            self._move(c, "p")
            cands.append(c)
        self._demote()
        ci = len(cands) - 1
        while len(self.where) > self.cap:
            cand = cands[ci] if ci >= 0 else None
            if prob:
                victim = next(iter(prob))
                if victim == cand:
                    victim = None
            else:
                victim = next(iter(prot or w))
            if cand is None or victim is None:
                gone = cand if victim is None else victim
                if gone == victim:
                    self.evicted.add(gone)
                else:
                    ci -= 1
            else:
                ci -= 1
                cf = self.sketch.frequency(cand)
                vf = self.sketch.frequency(victim)
                won = cf > vf or (cf > 5 and self.rng.getrandbits(7) == 0)
                gone = victim if won else cand
                (self.evicted if won else self.rejected).add(gone)
            del self.q[self.where.pop(gone)][gone]


def run(trace, cap, seed, mode, epoch, delta, margin, fixed, log):
    rng = random.Random(seed)
    sketch = Sketch(rng.getrandbits(32))
    sketch.init(cap)
    start = int(cap * fixed) if mode == "fixed" else max(1, cap // 100)
    cache = Policy(cap, sketch, rng, start, mode in ("ghost", "ghostroll",
                                                     "ghostsel"))
    span, step = int(epoch * cap), max(1, int(delta * cap))
    copies, t, base, moves = [], 0, 0, 0
    paired = mode not in ("ghost", "fixed")
    for k in trace:
        sketch.increment(k)
        cache.access(k)
        for c in copies:
            c.access(k)
        if not paired or len(cache.where) < cap:
            continue
        t += 1
        if copies and t < span:
            continue
        if copies:
            mine = cache.hits - base
            best = max(copies, key=lambda c: c.hits)
            if log:
                print(cache.window, mine / span,
                      [(c.window, c.hits / span) for c in copies],
                      file=sys.stderr)
            if best.hits > mine + margin * span:
                cache.set_window(best.start)
                moves += 1
        base, t = cache.hits, 0
        if mode in ("roll", "ghostroll"):
            windows = (cache.window + step, cache.window - step)
        else:
            windows = [int(cap * s) for s in SHARES
                       if int(cap * s) != cache.window]
        copies = [cache.clone(w) for w in windows if 0 <= w <= cap]
        for c in copies:
            c.start = c.window
    return cache.hits / len(trace), cache.window, moves


def follow(trace, cap, seed, share, margin, decay, log):
    rng = random.Random(seed)
    sketch = Sketch(rng.getrandbits(32))
    sketch.init(cap)
    start = max(1, cap // 100)
    cache = Policy(cap, sketch, rng, start, True)
    a = Policy(cap, sketch, random.Random(seed * 7 + 1), start, True)
    b = Policy(cap, sketch, random.Random(seed * 7 + 2), int(cap * share),
               False)
    score_a = score_b = 0.0
    on_b, switches, n = False, 0, 0
    for k in trace:
        n += 1
        sketch.increment(k)
        cache.access(k)
        ha, hb = a.hits, b.hits
        a.access(k)
        b.access(k)
        score_a = score_a * decay + (a.hits - ha)
        score_b = score_b * decay + (b.hits - hb)
        if not on_b and score_b > score_a + margin:
            on_b, switches = True, switches + 1
            cache.ghosts = False
            cache.set_window(b.window)
        elif on_b and score_a > score_b + margin:
            on_b, switches = False, switches + 1
            cache.ghosts = True
            cache.set_window(a.window)
        else:
            continue
        if log:
            print(n, "B" if on_b else "A", round(score_a, 1),
                  round(score_b, 1), file=sys.stderr)
    return cache.hits / len(trace), cache.window, switches


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="ghost",
                    choices=["ghost", "fixed", "roll", "ghostroll", "sel",
                             "ghostsel", "follow"])
    ap.add_argument("--epoch", type=float, default=4.0)
    ap.add_argument("--delta", type=float, default=0.0625)
    ap.add_argument("--margin", type=float, default=0.0)
    ap.add_argument("--fixed", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--decay", type=float, default=1.0)
    ap.add_argument("--log", action="store_true")
    a, pairs = trace_pairs(ap)
    for name, trace, cap in pairs:
        if a.mode == "follow":
            rs = [follow(trace, cap, s + 1, a.fixed, a.margin * cap,
                         a.decay, a.log) for s in range(a.seeds)]
        else:
            rs = [run(trace, cap, s + 1, a.mode, a.epoch, a.delta,
                      a.margin, a.fixed, a.log) for s in range(a.seeds)]
        print(f"trace={name} capacity={cap} mode={a.mode} "
              f"hit_ratio={sum(r[0] for r in rs) / len(rs):.4f} "
              f"window={[r[1] for r in rs]} moves={[r[2] for r in rs]}",
              flush=True)


if __name__ == "__main__":
    main()

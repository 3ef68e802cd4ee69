#!/usr/bin/env python3
"""A model of LIRS, to judge it against the L1's W-TinyLFU on the shared traces.

Not shipped code: a reference simulation (exact stacks, no sharding, no
concurrency) used to decide whether porting LIRS to src/tiers/mem.c would
pass the policy bar of docs/performance.md.  Prints one line per trace.

    bench/models/lirs.py [--hir PCT] [--adapt] [--grow G] TRACE CAPACITY [...]

--hir sets the share of the capacity kept for resident HIR entries (LIRS
paper: 1%).  --adapt moves that share as the L1 moves its window: two ghosts
(a quarter of the capacity each) remember HIR entries evicted before ever
being LIR, and entries evicted after being demoted from LIR; a miss on the
first grows the HIR share by one entry, a miss on the second shrinks it.
--grow sets how much a miss on the first grows it (entries, may be a
fraction; default 1): ARC's rule is symmetric, and sprite wants the share
to grow faster than it shrinks.
"""
import argparse
import gzip
from collections import OrderedDict


def read_trace(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return [int(line) for line in f if line.strip()]


def trace_pairs(ap):
    """Parses ap's arguments, which end in TRACE CAPACITY pairs (every
    model's command line); returns them, and the pairs as (name, trace,
    capacity), each trace read when its turn comes."""
    ap.add_argument("pairs", nargs="+", help="TRACE CAPACITY ...")
    a = ap.parse_args()
    if len(a.pairs) % 2:
        ap.error("give each trace its capacity")
    pairs = ((path.rsplit("/", 1)[-1], read_trace(path), int(cap))
             for path, cap in zip(a.pairs[::2], a.pairs[1::2]))
    return a, pairs


class Ghost:
    def __init__(self, size):
        self.size = max(1, size)
        self.keys = OrderedDict()

    def add(self, k):
        self.keys[k] = True
        self.keys.move_to_end(k)
        if len(self.keys) > self.size:
            self.keys.popitem(last=False)

    def take(self, k):
        return self.keys.pop(k, None) is not None


def lirs(trace, cap, hir_share=0.01, adapt=False, grow=1.0, record=None):
    """The hit ratio; record, a list, is given each access's hit or miss."""
    hir = max(1.0, float(int(cap * hir_share)))
    stack = OrderedDict()  # recency stack S, oldest first
    queue = OrderedDict()  # resident HIR entries Q, oldest first
    lir, resident, was_lir = set(), set(), set()
    fresh, demoted = Ghost(cap // 4), Ghost(cap // 4)
    hits = 0

    def prune():
        while stack:
            k = next(iter(stack))
            if k in lir:
                break
            del stack[k]

    def demote_bottom():
        k = next(iter(stack))
        lir.discard(k)
        del stack[k]
        queue[k] = True
        was_lir.add(k)
        prune()

    def balance():
        while len(lir) > cap - int(hir) and stack:
            demote_bottom()

    for x in trace:
        if record is not None:
            record.append(x in resident)
        if x in resident:
            hits += 1
            if x in lir:
                bottom = next(iter(stack)) == x
                stack.move_to_end(x)
                if bottom:
                    prune()
            elif x in stack:
                stack.move_to_end(x)
                lir.add(x)
                del queue[x]
                balance()
            else:
                stack[x] = True
                queue.move_to_end(x)
            continue
        if adapt:
            if fresh.take(x):
                hir = min(cap - 1.0, hir + grow)
            elif demoted.take(x):
                hir = max(1.0, hir - 1)
        if len(resident) < cap and len(lir) < cap - int(hir):
            resident.add(x)
            lir.add(x)
            stack[x] = True
            stack.move_to_end(x)
            continue
        if len(resident) >= cap:
            if not queue:
                demote_bottom()
            victim, _ = queue.popitem(last=False)
            resident.discard(victim)
            (demoted if victim in was_lir else fresh).add(victim)
            was_lir.discard(victim)
        resident.add(x)
        if x in stack:
            stack.move_to_end(x)
            lir.add(x)
        else:
            stack[x] = True
            queue[x] = True
        balance()
        if len(stack) > 3 * cap:  # bound the non-resident entries
            for k in list(stack):
                if len(stack) <= 3 * cap:
                    break
                if k not in resident:
                    del stack[k]
            prune()
    return hits / len(trace)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hir", type=float, default=1.0, help="HIR share, percent")
    ap.add_argument("--adapt", action="store_true")
    ap.add_argument("--grow", type=float, default=1.0)
    a, pairs = trace_pairs(ap)
    for name, trace, cap in pairs:
        r = lirs(trace, cap, a.hir / 100, a.adapt, a.grow)
        print(f"trace={name} capacity={cap} hit_ratio={r:.4f}", flush=True)


if __name__ == "__main__":
    main()

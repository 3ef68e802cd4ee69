#!/usr/bin/env python3
"""Models of S3-FIFO and SIEVE, to judge them against the L1's W-TinyLFU on
the shared traces (the policy issue names both as candidates).

Not shipped code: reference simulations (exact queues, no sharding, no
concurrency), deterministic.  Prints one line per trace and policy.

    bench/models/fifo.py [--policy s3fifo|sieve|both] [--small PCT]
                         [--promote N] TRACE CAPACITY [TRACE CAPACITY...]

S3-FIFO (Yang et al., SOSP 2023): a small FIFO (--small, 10% of the
capacity) takes new keys; a key leaving it moves to the main FIFO if it was
read at least --promote times while there (default 1), else it leaves a
ghost entry.  A miss on a ghost entry goes straight to the main FIFO, which
is a CLOCK over a 2-bit counter: a key at its tail with a non-zero count is
reinserted with the count less one.  The ghost remembers as many keys as the
main FIFO holds.

SIEVE (Zhang et al., NSDI 2024): one FIFO with a visited bit per key; a hand
walks from the oldest key towards the newest, clearing visited bits, and
evicts the first unvisited key it finds, staying where it stopped.
"""
import argparse
from collections import OrderedDict

from lirs import trace_pairs  # the models' shared piece


def s3fifo(trace, cap, small_share=0.10, promote=1):
    small_cap = max(1, int(cap * small_share))
    small = OrderedDict()  # key -> reads while in small; oldest first
    main = OrderedDict()  # key -> 2-bit count; oldest first
    ghost = OrderedDict()  # keys only; oldest first
    hits = 0

    def ghost_add(k):
        ghost[k] = True
        while len(ghost) > max(1, len(main), cap - small_cap):
            ghost.popitem(last=False)

    def evict_main():
        while main:
            k, f = next(iter(main.items()))
            del main[k]
            if f > 0:
                main[k] = f - 1  # reinserted at the head
            else:
                return

    def evict_small():
        while small:
            k, f = small.popitem(last=False)
            if f >= promote:
                main[k] = 0
                if len(main) > cap - small_cap:
                    evict_main()
            else:
                ghost_add(k)
                return

    def evict():
        if len(small) >= small_cap:
            evict_small()
        else:
            evict_main()

    for k in trace:
        if k in small:
            small[k] = min(small[k] + 1, 3)
            hits += 1
            continue
        if k in main:
            main[k] = min(main[k] + 1, 3)
            hits += 1
            continue
        while len(small) + len(main) >= cap:
            evict()
        if ghost.pop(k, None) is not None:
            main[k] = 0
        else:
            small[k] = 0
    return hits / len(trace)


def sieve(trace, cap):
    # A doubly linked FIFO over dicts: prev points towards the oldest key.
    newer, older, visited = {}, {}, {}
    head = tail = None  # newest, oldest
    hand = None
    hits = 0
    for k in trace:
        if k in visited:
            visited[k] = True
            hits += 1
            continue
        if len(visited) >= cap:
            h = hand if hand is not None else tail
            while visited[h]:
                visited[h] = False
                h = newer[h] if newer[h] is not None else tail
            hand = newer[h]
            # unlink h
            o, n = older[h], newer[h]
            if o is not None:
                newer[o] = n
            else:
                tail = n
            if n is not None:
                older[n] = o
            else:
                head = o
            del newer[h], older[h], visited[h]
        visited[k] = False
        older[k], newer[k] = head, None
        if head is not None:
            newer[head] = k
        head = k
        if tail is None:
            tail = k
    return hits / len(trace)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="both",
                    choices=["s3fifo", "sieve", "both"])
    ap.add_argument("--small", type=float, default=10.0)
    ap.add_argument("--promote", type=int, default=1)
    a, pairs = trace_pairs(ap)
    for name, trace, cap in pairs:
        if a.policy in ("s3fifo", "both"):
            r = s3fifo(trace, cap, a.small / 100, a.promote)
            print(f"{name} capacity={cap} s3fifo small={a.small:g}% "
                  f"promote={a.promote} hit_ratio={r:.4f}")
        if a.policy in ("sieve", "both"):
            print(f"{name} capacity={cap} sieve "
                  f"hit_ratio={sieve(trace, cap):.4f}")


if __name__ == "__main__":
    main()

"""The byte stream of the handoff transfer test: SIZE bytes from SEED, each megabyte a
different rotation of one random block (a misplaced block changes the hash)."""
import random


def stream(seed, size):
    block = random.Random(seed).randbytes(1 << 20)
    sent = 0
    i = 0
    while sent < size:
        part = block[i % 997 :] + block[: i % 997]
        part = part[: size - sent]
        yield part
        sent += len(part)
        i += 1

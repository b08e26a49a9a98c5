"""
Writes a token shard of random ids (docs/FORMATS.md, "Token shard"), for tests
and benchmarks that need data of a given size without a tokenizer.

    python3 dev/random_shard.py OUT.bin --tokens N --vocab V [--seed S]

The tokens follow a simple repeating pattern with noise, so a model can learn
something and the loss visibly falls in a smoke test.
"""
import argparse
import os
import random
import struct
import sys
from array import array

MAGIC = 20240520


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.tokens < 1 or args.vocab < 2:
        sys.exit("random_shard: --tokens must be >= 1 and --vocab >= 2")
    rng = random.Random(args.seed)
    period = min(args.vocab, 17)
    toks = [(i % period) if rng.random() < 0.8 else rng.randrange(args.vocab) for i in range(args.tokens)]
    version = 1 if args.vocab <= 65536 else 2
    body = array("H" if version == 1 else "I", toks)
    header = struct.pack("<256i", MAGIC, version, args.tokens, *([0] * 253))
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(body.tobytes())
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()

"""
Compares the training content of two JSONL logs (docs/FORMATS.md, "Training log"):
every step line's step, loss, grad_norm, lr and per-layer gradient norms, and every
val line, must be identical (bitwise: the numbers are written with 9 significant
digits, enough to round-trip a float32). Timing fields are ignored.

    python3 dev/compare_logs.py A.jsonl B.jsonl [--from-step S]
Exits 1 naming the first difference.
"""
import json
import sys

KEYS = ("step", "loss", "grad_norm", "lr", "layer_grad_norms", "emb_grad_norm", "final_norm_grad_norm",
        "head_grad_norm", "skipped", "val_loss")


def rows(path, from_step):
    out = []
    for line in open(path):
        r = json.loads(line)
        if r["kind"] in ("step", "val") and r["step"] >= from_step:
            out.append((r["kind"],) + tuple(r.get(k) for k in KEYS))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    from_step = 0
    if "--from-step" in sys.argv:
        from_step = int(sys.argv[sys.argv.index("--from-step") + 1])
        args = [a for a in args if a != str(from_step)]
    if len(args) != 2:
        sys.exit("usage: compare_logs.py A.jsonl B.jsonl [--from-step S]")
    a, b = rows(args[0], from_step), rows(args[1], from_step)
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            print(f"logs differ at record {i}:\n  {args[0]}: {x}\n  {args[1]}: {y}")
            sys.exit(1)
    if len(a) != len(b):
        print(f"logs differ in length: {len(a)} vs {len(b)} records")
        sys.exit(1)
    print(f"logs identical: {len(a)} step/val records (from step {from_step})")


if __name__ == "__main__":
    main()

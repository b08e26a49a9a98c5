"""
Corpora for machines with internet, through Hugging Face `datasets` (streaming):

    python3 data/hf_corpus.py --dataset c4 --tokenizer t5.model --out data/cache/shards/c4_t5 \\
        [--train_docs 1000000] [--val_docs 50000] [--workers 8] [--shard_tokens 100000000]

    --dataset c4            allenai/c4 "en" (the paper's data; its own validation split)
              fineweb-edu   HuggingFaceFW/fineweb-edu "sample-10BT" (train only: a document
                            goes to validation when sha256 of its id falls under --val_fraction)
              tinystories   roneneldan/TinyStories (its own validation split)

Needs `pip install datasets` (not available on the offline build machines; the
rest of this script is). Every document then takes exactly the offline corpus'
path - corpus.normalise_text, the tokenizer's chunks/encode_chunk, [eot] + ids,
encode.ShardWriter - through encode.tokenize_documents; tests/data.sh runs this
file's document path (documents()) on stand-in rows.
"""
import argparse
import hashlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import encode  # noqa: E402
from tokenizers import load_tokenizer, write_tokenizer_file  # noqa: E402

# name -> (HF path, config, {our split: HF split or None (= hash split of train)}, id field)
DATASETS = {
    "c4": ("allenai/c4", "en", {"train": "train", "val": "validation"}, None),
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample-10BT", {"train": "train", "val": None}, "id"),
    "tinystories": ("roneneldan/TinyStories", None, {"train": "train", "val": "validation"}, None),
}


def hf_rows(name, hf_split):
    """Stream the rows of one split (the only part that needs `datasets` and the network)."""
    try:
        from datasets import load_dataset
    except ImportError:
        sys.exit("error: the Python package 'datasets' is missing (pip install datasets); this script needs "
                 "internet access to Hugging Face. The offline default corpus is data/corpus.py")
    path, config, _, _ = DATASETS[name]
    return load_dataset(path, config, split=hf_split, streaming=True)


def in_val(key, val_fraction):
    """Stable whole-document split for datasets without a validation split."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) < val_fraction * 2**32


def documents(name, rows_fn, train_docs, val_docs, val_fraction=0.0005):
    """Yields (split, text): validation first, then train. rows_fn(name, hf_split)
    returns an iterable of row dicts with a "text" field."""
    _, _, splits, id_field = DATASETS[name]
    if splits["val"] is not None:
        plan = [("val", splits["val"], val_docs, None), ("train", splits["train"], train_docs, None)]
    else:   # one stream, split by document id: val docs come from the start of the stream
        plan = [("val", splits["train"], val_docs, True), ("train", splits["train"], train_docs, False)]
    for split, hf_split, limit, want_val in plan:
        n = 0
        if limit <= 0:
            continue
        for row in rows_fn(name, hf_split):
            text = row.get("text")
            if not text:
                continue
            if want_val is not None:
                key = str(row.get(id_field) or hashlib.sha256(text.encode("utf-8")).hexdigest())
                if in_val(key, val_fraction) != want_val:
                    continue
            yield split, text
            n += 1
            if n >= limit:
                break


def build(name, tok, out, rows_fn=hf_rows, train_docs=1_000_000, val_docs=10_000, workers=2,
          shard_tokens=100_000_000, val_fraction=0.0005, quiet=False):
    os.makedirs(out, exist_ok=True)
    writers = {s: encode.ShardWriter(out, s, tok.vocab, shard_tokens) for s in ("train", "val")}
    t0 = time.time()
    shards = encode.tokenize_documents(documents(name, rows_fn, train_docs, val_docs, val_fraction), tok, writers,
                                       workers)
    write_tokenizer_file(os.path.join(out, "tokenizer.bin"), tok)
    if not quiet:
        dt = time.time() - t0
        mb = sum(w.bytes for w in writers.values()) / 1e6
        for s, w in writers.items():
            print("%-5s %8d documents %9d tokens %d shard(s)" % (s, w.docs, w.tokens, len(shards[s])))
        print("tokenized %.1f MB in %.1f s: %.2f MB/s -> %s" % (mb, dt, mb / max(dt, 1e-9), out))
    return shards


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--tokenizer", default="gpt2", help="gpt2 | path/to/sentencepiece.model (the paper: T5's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train_docs", type=int, default=1_000_000)
    ap.add_argument("--val_docs", type=int, default=10_000)
    ap.add_argument("--val_fraction", type=float, default=0.0005, help="fineweb-edu only: share of documents in val")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--shard_tokens", type=int, default=100_000_000)
    args = ap.parse_args()
    build(args.dataset, load_tokenizer(args.tokenizer), args.out, hf_rows, args.train_docs, args.val_docs,
          args.workers, args.shard_tokens, args.val_fraction)


if __name__ == "__main__":
    main()

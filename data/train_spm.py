"""
Trains a SentencePiece model on the TRAIN split of a corpus (never on validation)
with Debian's `spm_train` (package `sentencepiece`).

    /usr/bin/python3 data/train_spm.py [--input data/cache/corpus] [--vocab 8192]
        [--model_type bpe|unigram] [--out data/cache/spm/corpus_bpe8192.model]

LLaMA-style settings: byte fallback (any byte is representable), identity
normalisation, white space kept as is, digits split, so `data/encode.py` with
this model round-trips the text byte for byte (newlines become <0x0A>).
Ids: 0 <unk>, 1 <s>, 2 </s> (the document separator data/encode.py uses).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from encode import InputError, read_jsonl_texts  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=os.path.join(HERE, "cache", "corpus"), help="folder with train.jsonl")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    ap.add_argument("--out", default=None, help="model path (default data/cache/spm/corpus_<type><vocab>.model)")
    ap.add_argument("--sentences", type=int, default=300000, help="lines sampled for training (spm's input_sentence_size)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    spm_train = shutil.which("spm_train")
    if spm_train is None:
        sys.exit("error: spm_train not found (Debian: sudo apt-get install sentencepiece)")
    src = os.path.join(args.input, "train.jsonl")
    if not os.path.exists(src):
        sys.exit("error: %s not found (run data/corpus.py first)" % src)
    out = args.out or os.path.join(HERE, "cache", "spm", "corpus_%s%d.model" % (args.model_type, args.vocab))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    prefix = out[:-len(".model")] if out.endswith(".model") else out
    lines_path = prefix + ".train.txt"
    n = 0
    try:
        with open(lines_path, "w", encoding="utf-8") as f:
            for text in read_jsonl_texts(src):   # one-line errors for bad lines (see encode.py)
                for l in text.split("\n"):
                    if l.strip():
                        f.write(l + "\n")
                        n += 1
    except InputError as e:
        os.remove(lines_path)
        sys.exit("error: %s" % e)
    if n == 0:
        os.remove(lines_path)
        sys.exit("error: %s: no text to train on (empty, or only white space)" % src)
    t0 = time.time()
    cmd = [spm_train, "--input=" + lines_path, "--model_prefix=" + prefix + ".tmp",
           "--vocab_size=%d" % args.vocab, "--model_type=" + args.model_type,
           "--byte_fallback=true", "--normalization_rule_name=identity", "--remove_extra_whitespaces=false",
           "--split_digits=true", "--character_coverage=0.9995", "--max_sentence_length=16384",
           "--input_sentence_size=%d" % args.sentences, "--shuffle_input_sentence=true",
           "--num_threads=%d" % args.threads, "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
           "--random_seed=1234", "--minloglevel=2"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.remove(lines_path)
    if r.returncode != 0:
        print(r.stdout[-3000:], file=sys.stderr)
        sys.exit("error: spm_train failed (exit %d)" % r.returncode)
    os.replace(prefix + ".tmp.model", prefix + ".model")
    os.replace(prefix + ".tmp.vocab", prefix + ".vocab")
    print("trained %s: %d pieces from %d lines in %.1f s -> %s" % (args.model_type, args.vocab, n, time.time() - t0,
                                                                  prefix + ".model"))


if __name__ == "__main__":
    main()

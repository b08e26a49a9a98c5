"""
One line of scripts/gpu_check.sh's llm.c side by side: this project's CUDA trainer and
llm.c's GPT-2 trainer, run one after the other on the same GPU, shards, B x T and number of
steps, from their two logs.

    python3 scripts/side_by_side.py TRAIN_GPT_LOG LLMC_LOG [--skip 3]

tok/s of each = B * T / (median step time over the step lines after the first --skip),
from each trainer's own step times ("%.1f ms" in train_gpt.cu's step line, "%.2f ms" in
llm.c's; llm.c's printed tok/s is a moving average, so it is not used). MFU of both counts
the same FLOPs per token, 6N + 6LCT: N the multiplied weights of GPT-2 (V C for the tied
embedding / classifier, and per layer 4C^2 + 2 C ffn plus biases and norm gains), not the
position embedding, nor llm.c's padding of the vocabulary to Vp; L C T for attention's two
T x T products. The peak is the one train_gpt.cu names ("mfu: against N TFLOP/s"). Both logs
must show the same model (L, C, V), B, T and number of steps, else a one-line error and exit 1.
"""
import argparse
import re
import statistics
import sys


def fail(msg):
    sys.exit("error: side_by_side: " + msg)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError as e:
        fail(f"{path}: {e.strerror}")


def need(pattern, text, path, what):
    m = re.search(pattern, text, re.M)
    if not m:
        fail(f"{path}: no {what} line")
    return m


def gpt2_flops_per_token(L, C, ffn, V, T):
    """6N + 6LCT; N = V C + L (4C^2 + 2 C ffn + 9C + ffn) + 2C (final norm)."""
    per_layer = 4 * C * C + 2 * C * ffn + 9 * C + ffn   # qkv, proj, fc, fc-proj weights + biases, 2 norms
    N = V * C + L * per_layer + 2 * C
    return N, 6 * N + 6 * L * C * T


def ours(path, skip):
    text = read(path)
    m = need(r"^model: gpt\b.*L=(\d+) H=\d+ C=(\d+) ffn=(\d+) vocab=(\d+)", text, path, "'model: gpt ... L= C= ffn= vocab='")
    L, C, ffn, V = map(int, m.groups())
    m = need(r"^train: B=(\d+) T=(\d+)", text, path, "'train: B= T='")
    B, T = map(int, m.groups())
    m = re.search(r"^mfu: against ([0-9.]+) TFLOP/s \(.*? of (.+)\)$", text, re.M)
    peak, gpu = (float(m.group(1)) * 1e12, m.group(2)) if m else (0.0, "an unknown GPU")
    ms = [float(x) for x in re.findall(r"^step +\d+/\d+ \| loss .*?\| ([0-9.]+) ms \|", text, re.M)]
    return dict(L=L, C=C, ffn=ffn, V=V, B=B, T=T, peak=peak, gpu=gpu, ms=ms)


def llmc(path):
    text = read(path)
    val = lambda key: int(need(r"^\| " + re.escape(key) + r" +\| (\d+)", text, path, f"'| {key}'").group(1))
    ms = [float(x) for x in re.findall(r"^step +\d+/\d+ \| loss .*?\| ([0-9.]+) ms \|", text, re.M)]
    return dict(L=val("num_layers L"), C=val("channels C"), V=val("vocab_size V"),
                B=val("micro batch size B"), T=val("sequence length T"), ms=ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("train_gpt_log")
    ap.add_argument("llmc_log")
    ap.add_argument("--skip", type=int, default=3, help="warm-up step lines left out of the median (default 3)")
    a = ap.parse_args()
    if a.skip < 0:
        fail(f"--skip must be >= 0, got {a.skip}")
    o, l = ours(a.train_gpt_log, a.skip), llmc(a.llmc_log)
    for k in ("L", "C", "V", "B", "T"):
        if o[k] != l[k]:
            fail(f"{k} differs: {o[k]} in {a.train_gpt_log}, {l[k]} in {a.llmc_log}")
    if len(o["ms"]) != len(l["ms"]):
        fail(f"{len(o['ms'])} step lines in {a.train_gpt_log}, {len(l['ms'])} in {a.llmc_log} (a run stopped early?)")
    if len(o["ms"]) <= a.skip:
        fail(f"{len(o['ms'])} step lines in {a.train_gpt_log}: none after the first {a.skip}")
    B, T = o["B"], o["T"]
    N, fpt = gpt2_flops_per_token(o["L"], o["C"], o["ffn"], o["V"], T)
    tok = [B * T * 1000.0 / statistics.median(r["ms"][a.skip:]) for r in (o, l)]
    mfu = ["%.1f%%" % (100.0 * t * fpt / o["peak"]) if o["peak"] > 0 else "n/a" for t in tok]
    steps = len(o["ms"])
    print(f"llm.c side by side gpt2-124m {B} x {T}, {steps} steps on {o['gpu']}: "
          f"train_gpt.cu {tok[0]:,.0f} tok/s, MFU {mfu[0]} | llm.c {tok[1]:,.0f} tok/s, MFU {mfu[1]} | "
          f"train_gpt.cu / llm.c {tok[0] / tok[1]:.3f}x "
          f"(median step after {a.skip}; {fpt / 1e6:.1f} MFLOP/token = 6N + 6LCT, N = {N:,}; "
          f"peak {o['peak'] / 1e12:.0f} TFLOP/s)")


if __name__ == "__main__":
    main()

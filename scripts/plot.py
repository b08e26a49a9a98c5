#!/usr/bin/python3
"""
Plots of the Mix-LN analyses (docs/ANALYSIS.md), one command, PNG files.

    /usr/bin/python3 scripts/plot.py --out FIGDIR RUN [RUN ...]

A RUN is a folder, optionally named: `NAME=DIR` or just `DIR` (then the name is the
config's placement, e.g. "Mix-LN K=3", or the folder name). From each folder it reads
whatever is there:
    DIR/log.jsonl          train_gpt --log  (loss curves, per-layer gradient norms)
    DIR/angular.json       train_gpt --mode angular --analysis_out
    DIR/layer_drop.json    train_gpt --mode layer_drop --analysis_out
Single files can be given instead with --log/--angular/--drop NAME=FILE (repeatable).

Writes (only the ones it has data for):
    FIGDIR/grad_norms.png   gradient norm per layer, one line per run, log scale
                            (mean over the logged steps in --grad_steps)
    FIGDIR/grad_norms_steps.png  the same norms over training, a heat map per run:
                            x = logged step, y = layer l, colour = log10 norm
                            (one colour scale for all runs; runs with at least
                            two logged steps)
    FIGDIR/angular.png      angular-distance heat map per run: x = layer l,
                            y = n, colour = distance between the states entering
                            layers l and l+n (x_L = output of the last block)
    FIGDIR/layer_drop.png   loss (or --drop_metric ppl) increase when layer l is
                            skipped, one line per run
    FIGDIR/loss.png         training loss (EMA-smoothed, --smooth) and validation
                            loss against step, one line per run
Runs with Debian's python3-matplotlib (/usr/bin/python3). Exit status 1 with a
one-line `error:` on a missing or malformed input.
"""
import argparse
import json
import math
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

PNG_META = {"Software": None}     # no matplotlib version in the file: same inputs, same bytes


def die(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


def split_name(spec):
    """'NAME=PATH' -> (NAME, PATH); 'PATH' -> (None, PATH)."""
    if "=" in spec and not os.path.exists(spec):
        name, path = spec.split("=", 1)
        return name, path
    return None, spec


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        die(f"{path}: {e.strerror}")
    except json.JSONDecodeError as e:
        die(f"{path}: not JSON ({e})")


def read_log(path):
    rows = []
    try:
        with open(path) as f:
            for i, line in enumerate(f):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        die(f"{path}:{i + 1}: not a JSON line")
    except OSError as e:
        die(f"{path}: {e.strerror}")
    cfg = next((r for r in rows if r.get("kind") == "config"), {})
    steps = [r for r in rows if r.get("kind") == "step"]
    vals = [r for r in rows if r.get("kind") == "val"]
    if not steps and not vals:
        die(f"{path}: no step or val lines (is it a train_gpt --log file?)")
    return dict(config=cfg, steps=steps, vals=vals)


def default_name(log, folder):
    cfg = log["config"] if log else {}
    if "post_ln_layers" in cfg and "n_layer" in cfg:
        K, L = cfg["post_ln_layers"], cfg["n_layer"]
        kind = "Pre-LN" if K == 0 else ("Post-LN" if K == L else "Mix-LN")
        return f"{kind} K={K}"
    return os.path.basename(os.path.normpath(folder))


def gather(args):
    """-> ordered dict name -> {log, angular, drop}."""
    runs = {}

    def slot(name):
        return runs.setdefault(name, {"log": None, "angular": None, "drop": None})

    for spec in args.runs:
        name, folder = split_name(spec)
        if not os.path.isdir(folder):
            die(f"{folder}: not a folder (give NAME=DIR or DIR; single files with --log/--angular/--drop)")
        paths = {k: os.path.join(folder, f) for k, f in
                 (("log", "log.jsonl"), ("angular", "angular.json"), ("drop", "layer_drop.json"))}
        log = read_log(paths["log"]) if os.path.exists(paths["log"]) else None
        name = name or default_name(log, folder)
        s = slot(name)
        s["log"] = log
        if os.path.exists(paths["angular"]):
            s["angular"] = read_json(paths["angular"])
        if os.path.exists(paths["drop"]):
            s["drop"] = read_json(paths["drop"])
        if not any(s.values()):
            die(f"{folder}: none of log.jsonl, angular.json, layer_drop.json")
    for key, specs, reader in (("log", args.log, read_log), ("angular", args.angular, read_json),
                               ("drop", args.drop, read_json)):
        for spec in specs:
            name, path = split_name(spec)
            data = reader(path)
            slot(name or default_name(data if key == "log" else None, os.path.splitext(path)[0]))[key] = data
    for name, s in runs.items():
        if s["angular"] is not None and s["angular"].get("kind") != "angular_distance":
            die(f"run {name}: the angular file is not a train_gpt --mode angular output")
        if s["drop"] is not None and s["drop"].get("kind") != "layer_drop":
            die(f"run {name}: the layer_drop file is not a train_gpt --mode layer_drop output")
    return runs


def parse_range(text):
    lo, _, hi = text.partition(":")
    return (int(lo) if lo else 0), (int(hi) if hi else None)


def save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- figures

def plot_grad_norms(runs, out, step_range):
    lo, hi = step_range
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = 0
    for name, s in runs.items():
        if not s["log"]:
            continue
        rows = [r for r in s["log"]["steps"] if r.get("layer_grad_norms")
                and r["step"] >= lo and (hi is None or r["step"] <= hi)]
        if not rows:
            continue
        g = np.array([[np.nan if v is None else v for v in r["layer_grad_norms"]] for r in rows], dtype=float)
        mean = np.nanmean(g, axis=0)
        steps = f"{rows[0]['step']}" if len(rows) == 1 else f"{rows[0]['step']}-{rows[-1]['step']}"
        ax.plot(np.arange(len(mean)), mean, marker="o", ms=4, label=f"{name} (steps {steps}, {len(rows)} logged)")
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer l")
    ax.set_ylabel("gradient norm of layer l (mean over logged steps)")
    ax.set_title("Per-layer gradient norm")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, os.path.join(out, "grad_norms.png"))
    return True


def panels(n, row_height):
    """a figure of n panels, up to 3 a row, the unused cells blank -> (figure, all its axes, flat)"""
    cols = min(n, 3)
    rws = math.ceil(n / cols)
    fig, axes = plt.subplots(rws, cols, figsize=(4.2 * cols + 0.8, row_height * rws), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def step_edges(steps):
    """cell edges around the logged steps (half way between neighbours; logging may be uneven)"""
    x = np.asarray(steps, dtype=float)
    mid = (x[1:] + x[:-1]) / 2
    return np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])


def plot_grad_norm_map(runs, out):
    items = []
    for name, s in runs.items():
        rows = [r for r in (s["log"]["steps"] if s["log"] else []) if r.get("layer_grad_norms")]
        if len(rows) < 2:
            continue
        g = np.array([[np.nan if v is None or v <= 0 else v for v in r["layer_grad_norms"]] for r in rows], dtype=float)
        items.append((name, [r["step"] for r in rows], np.log10(g.T)))   # (layers, steps)
    if not items:
        return False
    lo = min(np.nanmin(m) for _, _, m in items)
    hi = max(np.nanmax(m) for _, _, m in items)
    fig, axes = panels(len(items), 3.6)
    for ax, (name, steps, m) in zip(axes, items):
        im = ax.pcolormesh(step_edges(steps), np.arange(m.shape[0] + 1) - 0.5, m, cmap="magma", vmin=lo, vmax=hi,
                           shading="flat")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} ({len(steps)} logged steps)", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("layer l")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.85, label="log10 gradient norm of layer l")
    fig.suptitle("Per-layer gradient norm over training")
    path = os.path.join(out, "grad_norms_steps.png")
    fig.savefig(path, dpi=110, metadata=PNG_META)
    plt.close(fig)
    print(f"wrote {path}")
    return True


def angular_grid(D):
    """distance matrix (L+1)x(L+1) -> M[n-1][l] = D[l][l+n] for n = 1..L, NaN where l+n > L."""
    D = np.asarray(D, dtype=float)
    L = D.shape[0] - 1
    M = np.full((L, L), np.nan)
    for n in range(1, L + 1):
        for l in range(0, L + 1 - n):
            M[n - 1, l] = D[l, l + n]
    return M


def plot_angular(runs, out):
    items = [(name, s["angular"]) for name, s in runs.items() if s["angular"]]
    if not items:
        return False
    grids = [angular_grid(a["distance"]) for _, a in items]
    vmax = max(np.nanmax(g) for g in grids)
    fig, axes = panels(len(items), 3.8)
    for ax, (name, a), M in zip(axes, items, grids):
        L = M.shape[0]
        im = ax.imshow(M, origin="lower", cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto",
                       extent=(-0.5, L - 0.5, 0.5, L + 0.5))
        ax.set_title(f"{name} ({a.get('samples', '?')} samples)", fontsize=9)
        ax.set_xlabel("layer l")
        ax.set_ylabel("n (distance to layer l+n)")
    fig.colorbar(im, ax=axes.tolist(), shrink=0.85, label="angular distance (1/pi) arccos(cos)")
    fig.suptitle("Angular distance between the states entering layer l and layer l+n")
    fig.savefig(os.path.join(out, "angular.png"), dpi=110, metadata=PNG_META)
    plt.close(fig)
    print(f"wrote {os.path.join(out, 'angular.png')}")
    return True


def plot_layer_drop(runs, out, metric):
    items = [(name, s["drop"]) for name, s in runs.items() if s["drop"]]
    if not items:
        return False
    key = "delta_loss" if metric == "loss" else "delta_ppl"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, d in items:
        layers = [r["layer"] for r in d["layers"]]
        ax.plot(layers, [r[key] for r in d["layers"]], marker="o", ms=4,
                label=f"{name} (full {metric} {d['full_loss' if metric == 'loss' else 'full_ppl']:.3f})")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer l removed (block skipped, no retraining)")
    ax.set_ylabel(f"validation {metric} increase")
    ax.set_title("Performance drop when one layer is removed")
    if all(min(r[key] for r in d["layers"]) > 0 for _, d in items):
        ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, os.path.join(out, "layer_drop.png"))
    return True


def ema(xs, alpha):
    out, m = [], None
    for x in xs:
        if x is None or not math.isfinite(x):
            out.append(float("nan"))
            continue
        m = x if m is None else alpha * m + (1 - alpha) * x
        out.append(m)
    return out


def plot_loss(runs, out, smooth):
    items = [(name, s["log"]) for name, s in runs.items() if s["log"]]
    if not items:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, (name, log) in enumerate(items):
        color = f"C{i % 10}"
        if log["steps"]:
            a1.plot([r["step"] for r in log["steps"]], ema([r["loss"] for r in log["steps"]], smooth),
                    color=color, lw=1.2, label=name)
        if log["vals"]:
            a2.plot([r["step"] for r in log["vals"]], [np.nan if r["val_loss"] is None else r["val_loss"]
                                                       for r in log["vals"]],
                    color=color, marker="o", ms=3, label=name)
    a1.set_title(f"training loss (EMA {smooth})")
    a2.set_title("validation loss")
    for ax in (a1, a2):
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    # the interesting part is the end: start the y axis at 10% of the run, not at the initial loss
    ys = []
    for line in a1.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        y = y[np.isfinite(y)]
        if len(y):
            ys.append((y[len(y) // 10], y.min()))
    if ys:
        lo, hi = min(m for _, m in ys), max(h for h, _ in ys)
        if hi > lo:
            a1.set_ylim(lo - 0.05 * (hi - lo), hi)
    save(fig, os.path.join(out, "loss.png"))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", metavar="[NAME=]DIR", help="run folders (log.jsonl, angular.json, layer_drop.json)")
    ap.add_argument("--out", required=True, help="folder for the PNG files (created)")
    ap.add_argument("--log", action="append", default=[], metavar="[NAME=]FILE", help="a train_gpt --log file")
    ap.add_argument("--angular", action="append", default=[], metavar="[NAME=]FILE", help="a --mode angular JSON")
    ap.add_argument("--drop", action="append", default=[], metavar="[NAME=]FILE", help="a --mode layer_drop JSON")
    ap.add_argument("--grad_steps", default=":", metavar="A:B",
                    help="average the per-layer gradient norms over logged steps A..B inclusive (default all)")
    ap.add_argument("--drop_metric", choices=("loss", "ppl"), default="loss", help="layer-drop y axis")
    ap.add_argument("--smooth", type=float, default=0.9, help="EMA factor for the training loss (0: none)")
    args = ap.parse_args()
    if not (args.runs or args.log or args.angular or args.drop):
        die("nothing to plot: give run folders or --log/--angular/--drop files")
    try:
        step_range = parse_range(args.grad_steps)
    except ValueError:
        die(f"--grad_steps: expected A:B, got {args.grad_steps!r}")
    runs = gather(args)
    os.makedirs(args.out, exist_ok=True)
    made = [plot_grad_norms(runs, args.out, step_range), plot_grad_norm_map(runs, args.out), plot_angular(runs, args.out),
            plot_layer_drop(runs, args.out, args.drop_metric), plot_loss(runs, args.out, args.smooth)]
    if not any(made):
        die("no plottable data in the inputs")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Plots dptrain runs and step-size sweeps (matplotlib, no display needed).

    scripts/plot.py RUN_DIR... [-o out.png]
        Reads each RUN_DIR/metrics.jsonl and draws one figure with three panels against the step:
        the training loss (log scale), the test accuracy and the step size gamma (lr), one line per
        run, labelled by the directory name. Default output: RUN_DIR/run.png next to the run's
        metrics.jsonl when there is one run directory, ./run.png when there are several.

    scripts/plot.py --sweep sweep.csv [-o sweep.png]
        Reads the CSV that `dptrain sweep` writes (lr,final_loss,best_loss,diverged,steps) and plots
        the final loss against lr, both axes logarithmic; diverged step sizes are red crosses at the
        top of the axis (their loss may be huge or NaN), the best step size (lowest final loss among
        those that did not diverge, as `dptrain sweep` reports it) is circled. Default output:
        sweep.png next to the CSV.

Exit codes: 0 success, 1 unreadable input, 2 usage error, 3 matplotlib missing.
The interpreter is /usr/bin/python3 on purpose: Debian's python3-matplotlib lives there, and a
pyenv or virtualenv python3 earlier on PATH would not see it.
"""
import argparse
import csv
import json
import math
import os
import sys

PROG = "plot.py"


def die(code, msg):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


def load_pyplot():
    try:
        import matplotlib
    except ImportError:
        # The script's own check: install Debian's package once (DPTRAIN_NO_INSTALL=1 only reports).
        deps = os.path.join(os.path.dirname(os.path.abspath(__file__)), "install-deps.sh")
        if os.environ.get("DPTRAIN_NO_INSTALL") or not os.access(deps, os.X_OK):
            print(f"{PROG}: matplotlib is not installed; install it with `sudo apt-get install python3-matplotlib` "
                  "(or `scripts/install-deps.sh --plots`)", file=sys.stderr)
            sys.exit(3)
        print(f"{PROG}: matplotlib is not installed: installing python3-matplotlib with {deps} --plots",
              file=sys.stderr)
        import subprocess
        if subprocess.call([deps, "--plots"], stdout=sys.stderr) != 0:
            print(f"{PROG}: installing python3-matplotlib failed; install it with "
                  "`sudo apt-get install python3-matplotlib`", file=sys.stderr)
            sys.exit(3)
        try:
            import matplotlib
        except ImportError:
            print(f"{PROG}: matplotlib still cannot be imported by {sys.executable}", file=sys.stderr)
            sys.exit(3)
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def num(v):
    """A metrics value: JSON null (non-finite in the run) and missing fields become NaN."""
    return float("nan") if v is None else float(v)


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    train, evals = [], []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    print(f"{PROG}: warning: {path}:{n}: not JSON, skipped", file=sys.stderr)
                    continue
                if "loss" in rec:
                    train.append(rec)
                elif "test_acc" in rec:
                    evals.append(rec)
    except OSError as e:
        die(1, f"{path}: {e.strerror}")
    if not train and not evals:
        die(1, f"{path}: no training or evaluation lines")
    return train, evals


def labels_for(dirs):
    """The directory names; the paths as given where two names would be the same."""
    names = [os.path.basename(os.path.normpath(d)) or d for d in dirs]
    return [d if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def plot_runs(plt, dirs, out):
    fig, (ax_loss, ax_acc, ax_lr) = plt.subplots(3, 1, sharex=True, figsize=(8, 9.5))
    for d, label in zip(dirs, labels_for(dirs)):
        train, evals = read_metrics(d)
        steps = [num(r.get("step")) for r in train]
        # Log axis: non-positive or non-finite losses are left out of the line (a gap).
        loss = [x if math.isfinite(x) and x > 0 else float("nan") for x in (num(r.get("loss")) for r in train)]
        (line,) = ax_loss.plot(steps, loss, label=label, linewidth=1.2)
        color = line.get_color()
        if evals:
            ax_acc.plot([num(r.get("step")) for r in evals], [num(r.get("test_acc")) for r in evals],
                        marker="o", markersize=3, color=color, label=label)
        ax_lr.plot(steps, [num(r.get("lr")) for r in train], color=color, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("training loss (mean over each logging interval)")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("test accuracy")
    ax_lr.set_ylabel("γ (lr)")
    ax_lr.set_title("step size γ")
    ax_lr.set_xlabel("step")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def read_sweep(path):
    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            need = {"lr", "final_loss", "diverged"}
            if not reader.fieldnames or not need <= set(reader.fieldnames):
                die(1, f"{path}: expected a header with lr,final_loss,best_loss,diverged,steps")
            for n, r in enumerate(reader, 2):
                try:
                    rows.append((float(r["lr"]), float(r["final_loss"]), int(r["diverged"]) != 0))
                except (TypeError, ValueError):
                    die(1, f"{path}:{n}: expected numbers, got {','.join(str(v) for v in r.values())}")
    except OSError as e:
        die(1, f"{path}: {e.strerror}")
    if not rows:
        die(1, f"{path}: no rows")
    return sorted(rows)


def plot_sweep(plt, path, out):
    rows = read_sweep(path)
    ok = [(lr, loss) for lr, loss, div in rows if not div and math.isfinite(loss) and loss > 0 and lr > 0]
    bad = [lr for lr, loss, div in rows if (div or not math.isfinite(loss)) and lr > 0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ok:
        ax.plot([r[0] for r in ok], [r[1] for r in ok], marker="o", color="tab:blue", label="final loss")
        best = min(ok, key=lambda r: r[1])
        ax.plot([best[0]], [best[1]], marker="o", markersize=14, markerfacecolor="none", markeredgecolor="tab:green",
                markeredgewidth=2, linestyle="none", label=f"best: lr {best[0]:.4g}, loss {best[1]:.4g}")
        lo, hi = min(r[1] for r in ok), max(r[1] for r in ok)
        ax.set_ylim(lo / 1.5, hi * 3)  # headroom for the diverged markers
    else:
        ax.set_ylim(0.1, 10)
        ax.set_title("every step size diverged")
    if bad:
        # x in data coordinates, y in axes coordinates: at the top, whatever the loss was.
        ax.plot(bad, [0.97] * len(bad), marker="x", markersize=10, markeredgewidth=2, color="red", linestyle="none",
                transform=ax.get_xaxis_transform(), clip_on=False, label="diverged")
    xs = [r[0] for r in rows if r[0] > 0]
    ax.set_xlim(min(xs) / 2, max(xs) * 2)
    ax.set_xlabel("step size γ (lr)")
    ax.set_ylabel("final loss")
    if ok:
        ax.set_title(f"step-size sweep: {os.path.basename(path)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(prog=PROG, description="Plot dptrain runs (metrics.jsonl) or a sweep CSV.",
                                epilog="Default output: RUN_DIR/run.png for one run, ./run.png for several, "
                                       "sweep.png next to the CSV.")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="directories holding metrics.jsonl")
    p.add_argument("--sweep", metavar="CSV", help="plot a `dptrain sweep` CSV instead")
    p.add_argument("-o", "--output", metavar="PNG", help="output file")
    a = p.parse_args(argv)
    if a.sweep and a.run_dirs:
        p.error("give either RUN_DIR... or --sweep CSV, not both")
    if not a.sweep and not a.run_dirs:
        p.error("give RUN_DIR... or --sweep CSV")
    if a.sweep:
        out = a.output or os.path.join(os.path.dirname(a.sweep), "sweep.png")
    elif len(a.run_dirs) == 1:
        out = a.output or os.path.join(a.run_dirs[0], "run.png")
    else:
        out = a.output or "run.png"
    plt = load_pyplot()
    try:
        if a.sweep:
            plot_sweep(plt, a.sweep, out)
        else:
            plot_runs(plt, a.run_dirs, out)
    except OSError as e:
        die(1, f"{out}: {e.strerror}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

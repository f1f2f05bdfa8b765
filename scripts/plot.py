#!/usr/bin/python3
"""Plots dptrain runs and step-size sweeps (matplotlib, no display needed).

    scripts/plot.py RUN_DIR... [--x auto|step|epoch|samples] [-o out.png]
        Reads each RUN_DIR/metrics.jsonl and draws one figure, one colour per run (labelled by the
        directory name): the loss (log scale), training solid and test dashed (validation dotted,
        when logged) on one panel, so overfitting shows as the lines parting; accuracy the same way
        (RMSE for mse runs, which log rmse/test_rmse instead of accuracy; both panels when the runs
        mix the two); the step size gamma (lr, log scale). The x axis is the step, or with --x
        epochs done or training samples seen; auto (the default) takes epochs when the runs' batch
        sizes (RUN_DIR/config.ini) differ, as a step then means a different amount of data.
        Default output: RUN_DIR/run.png next to the run's metrics.jsonl when there is one run
        directory, ./run.png when there are several.

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
                elif any(k in rec for k in EVAL_KEYS):
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


# Evaluation lines carry one of these; "val_" lines, when a run has them, are drawn like "test_" ones.
EVAL_KEYS = ("test_loss", "test_acc", "test_rmse", "val_loss", "val_acc", "val_rmse")


def read_run_config(run_dir):
    """{(section, key): value} of the [model] and [train] keys in RUN_DIR/config.ini (what dptrain
    wrote; [layer] sections repeat, so no configparser); empty without the file."""
    keys, section = {}, None
    try:
        with open(os.path.join(run_dir, "config.ini")) as f:
            for line in f:
                line = line.split(";")[0].split("#")[0].strip()
                if line.startswith("["):
                    section = line.strip("[]").strip()
                elif section in ("model", "train") and "=" in line:
                    key, value = (x.strip() for x in line.split("=", 1))
                    keys[(section, key)] = value
    except OSError:
        pass
    return keys


def int_or_none(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None  # "full" or missing


class Run:
    """One run's lines and its x coordinates on the chosen axis."""

    def __init__(self, run_dir, label):
        self.dir, self.label = run_dir, label
        self.train, self.evals = read_metrics(run_dir)
        cfg = read_run_config(run_dir)
        self.batch = int_or_none(cfg.get(("train", "batch_size")))
        lines = self.train + self.evals
        # mse runs log RMSE (and MAE) where classification runs log accuracy.
        self.regression = cfg.get(("model", "loss")) == "mse" or any(
            k in r for r in lines for k in ("rmse", "test_rmse", "val_rmse"))

    def x_of_train(self, axis):
        """The training lines' x; None when this run's lines cannot give that axis."""
        steps = [num(r.get("step")) for r in self.train]
        if axis == "step" or not self.train:
            return steps
        key = "epochs_done" if axis == "epoch" else "samples"
        if all(r.get(key) is not None for r in self.train):
            return [num(r[key]) for r in self.train]
        if axis == "samples" and self.batch:  # older metrics: every batch taken as full
            return [s * self.batch for s in steps]
        return None

    def x_of_evals(self, axis, train_x):
        """Evaluation lines have only a step: their x is interpolated between the training lines'."""
        steps = [num(r.get("step")) for r in self.evals]
        if axis == "step" or not self.train:
            return steps
        known = sorted(zip((num(r.get("step")) for r in self.train), train_x))
        return [interpolate(known, s) for s in steps]


def interpolate(known, s):
    """x at step s from sorted (step, x) pairs; proportional to the step outside them."""
    lo = (0.0, 0.0)
    for step, x in known:
        if step >= s:
            return lo[1] + (x - lo[1]) * (s - lo[0]) / (step - lo[0]) if step > lo[0] else x
        lo = (step, x)
    return lo[1] * s / lo[0] if lo[0] > 0 else s


def choose_axis(runs, wanted):
    """--x auto: the step, unless the runs' batch sizes differ (then a step means different amounts
    of data): epochs when every run logged them, else samples."""
    if wanted != "auto":
        return wanted
    if len({r.batch for r in runs if r.batch}) <= 1:
        return "step"
    return "epoch" if all(r.x_of_train("epoch") is not None for r in runs) else "samples"


def positive(values):
    """For log axes: non-positive or non-finite values are left out of the line (a gap)."""
    return [v if math.isfinite(v) and v > 0 else float("nan") for v in values]


def series(recs, key):
    return [num(r.get(key)) for r in recs]


def draw_pair(ax, run, axis, color, train_key, eval_keys, log=False):
    """One quantity of one run: training lines solid, evaluations dashed with markers (test) or
    dotted (validation), so a gap between them (overfitting) shows."""
    fix = positive if log else (lambda v: v)
    tx = run.x_of_train(axis)
    if run.train and any(train_key in r for r in run.train):
        ax.plot(tx, fix(series(run.train, train_key)), color=color, linewidth=1.2)
    if run.evals:
        ex = run.x_of_evals(axis, tx)
        for key, style in zip(eval_keys, ("--", ":")):
            if any(key in r for r in run.evals):
                ax.plot(ex, fix(series(run.evals, key)), color=color, linestyle=style, marker="o", markersize=3)


def readable_log_axis(axis, ticker):
    """A log axis (ax.xaxis or ax.yaxis) labelled 0.001, 0.3, 1 rather than 10⁻³ and 3×10⁻¹; over a
    small range its minor ticks (2, 5 of each decade) are labelled too."""
    fmt = ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
    axis.set_major_formatter(fmt)
    axis.set_minor_locator(ticker.LogLocator(base=10, subs=(2, 5)))
    lo, hi = sorted(axis.get_view_interval())
    axis.set_minor_formatter(fmt if lo > 0 and hi / lo < 100 else ticker.NullFormatter())


X_LABELS = {"step": "step", "epoch": "epoch", "samples": "training samples"}


def plot_runs(plt, dirs, out, axis="auto"):
    from matplotlib import ticker
    from matplotlib.lines import Line2D
    runs = [Run(d, label) for d, label in zip(dirs, labels_for(dirs))]
    axis = choose_axis(runs, axis)
    for r in runs:
        if r.x_of_train(axis) is None:
            why = "no \"epochs_done\" field" if axis == "epoch" else "no \"samples\" field and no batch size in config.ini"
            die(1, f"{os.path.join(r.dir, 'metrics.jsonl')}: {why} (metrics from an older dptrain): use --x step")
    kinds = [k for k, want in (("acc", any(not r.regression for r in runs)), ("rmse", any(r.regression for r in runs)))
             if want]
    fig, axes = plt.subplots(2 + len(kinds), 1, sharex=True, figsize=(8, 3.2 * (2 + len(kinds))))
    ax_loss, ax_lr = axes[0], axes[-1]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    evaluated = {"--": False, ":": False}
    for i, r in enumerate(runs):
        color = colors[i % len(colors)]
        draw_pair(ax_loss, r, axis, color, "loss", ("test_loss", "val_loss"), log=True)
        for ax, kind in zip(axes[1:-1], kinds):
            if (kind == "rmse") == r.regression:
                draw_pair(ax, r, axis, color, "train_acc" if kind == "acc" else "rmse",
                          (f"test_{kind}", f"val_{kind}"))
        tx = r.x_of_train(axis)
        if r.train:
            ax_lr.plot(tx, positive(series(r.train, "lr")), color=color)
        evaluated["--"] |= any("test_loss" in e for e in r.evals)
        evaluated[":"] |= any("val_loss" in e for e in r.evals)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss: training (mean over each logging interval) and evaluation")
    for ax, kind in zip(axes[1:-1], kinds):
        ax.set_ylabel("accuracy" if kind == "acc" else "RMSE")
        ax.set_title("accuracy" if kind == "acc" else "RMSE (mse runs)")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("γ (lr)")
    ax_lr.set_title("step size γ")
    ax_lr.set_xlabel(X_LABELS[axis])
    if axis == "samples":
        ax_lr.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    for ax in (ax_loss, ax_lr):
        readable_log_axis(ax.yaxis, ticker)
    # Colours name the runs, line styles what was measured.
    handles = [Line2D([], [], color=colors[i % len(colors)], label=r.label) for i, r in enumerate(runs)]
    handles.append(Line2D([], [], color="gray", label="training"))
    for style, name in (("--", "test"), (":", "validation")):
        if evaluated[style]:
            handles.append(Line2D([], [], color="gray", linestyle=style, marker="o", markersize=3, label=name))
    ax_loss.legend(handles=handles, fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    panels = ["loss"] + ["accuracy" if k == "acc" else "RMSE" for k in kinds] + ["γ"]
    return f"{', '.join(panels)} against the {X_LABELS[axis]}"


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
    from matplotlib import ticker
    readable_log_axis(ax.xaxis, ticker)
    readable_log_axis(ax.yaxis, ticker)
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
    p.add_argument("--x", choices=("auto", "step", "epoch", "samples"), default="auto",
                   help="x axis of a run plot (auto: the step, epochs when the runs' batch sizes differ)")
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
    what = None
    try:
        if a.sweep:
            plot_sweep(plt, a.sweep, out)
        else:
            what = plot_runs(plt, a.run_dirs, out, a.x)
    except OSError as e:
        die(1, f"{out}: {e.strerror}")
    print(f"wrote {out}" + (f": {what}" if what else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

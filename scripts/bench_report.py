#!/usr/bin/env python3
"""Combines scripts/bench.sh's measurements into bench.json (stdout) and a table (stderr):
every target as a ratio against a reference measured in the same run, with PASS/MISS, and a
projection of step time and scaling efficiency to 8..1024 ranks.

Projection model (weak scaling: each rank keeps the measured per-rank batch of 128): a step costs
the measured one-rank compute and optimizer time plus, for comm = flat, a ring allreduce of the
gradient block, t = 2(P-1) a + 2(P-1)/P n / B, with a the network latency and B its bandwidth
(--net-gbps, --net-latency-us), plus its copies through the node's shared memory (--node-mem-gbs,
shared by --ranks-per-node ranks); for comm = node, the hierarchical scheme (see main()). Neither is
overlapped with compute (the pessimistic case). Efficiency is the one-rank step time over the P-rank
one."""
import argparse
import json
import os
import sys


def load(d, name):
    """name.json, or the fastest of name-1.json, name-2.json, ... (interleaved repeats)."""
    p = os.path.join(d, name + ".json")
    if os.path.exists(p):
        return json.load(open(p))
    runs = [json.load(open(os.path.join(d, f))) for f in sorted(os.listdir(d))
            if f.startswith(name + "-") and f[len(name) + 1:-5].isdigit() and f.endswith(".json")]
    return max(runs, key=lambda r: r["samples_per_s"]) if runs else None


def target(rows, num, name, value, goal, unit, ok, note):
    rows.append({"target": num, "name": name, "value": value, "goal": goal, "unit": unit,
                 "result": "PASS" if ok else "MISS", "note": note})


def time_to(metrics, acc):
    for line in open(metrics):
        r = json.loads(line)
        if r.get("test_acc") is not None and r["test_acc"] >= acc:
            return r.get("train_s"), r["step"], r["test_acc"]
    return None, None, None


def step_ms(d, name):
    """The fastest repetition's mean step_ms over its logging intervals after the first (warm-up)."""
    best = None
    for f in sorted(os.listdir(d)):
        m = os.path.join(d, f, "metrics.jsonl")
        if not (f.startswith(name + "-") and f[len(name) + 1:].isdigit() and os.path.exists(m)):
            continue
        v = [r["step_ms"] for r in map(json.loads, open(m)) if r.get("step_ms") is not None][1:]
        if v and (best is None or sum(v) / len(v) < best):
            best = sum(v) / len(v)
    return best


def cnn_row(rows, cnn, tc):
    """configs/fashion_cnn.ini against the same network in PyTorch, with the conv layers' share of the
    step and how close their kernels (im2col, sgemm, col2im) come to the sgemm time of their shapes."""
    name = "CNN 1 rank vs PyTorch, 1 thread, batch 128"
    if not cnn or not tc:
        rows.append({"target": "cnn", "name": name, "result": "SKIPPED",
                     "note": "python3-torch not installed" if cnn else "no cnn-np1 measurement"})
        return
    r = cnn["samples_per_s"] / tc["samples_per_s"]
    note = f"dptrain {cnn['samples_per_s']:.0f} vs torch {tc['samples_per_s']:.0f} samples/s"
    if cnn.get("conv_s"):
        step = cnn["step_s"]
        note += f"; conv layers alone {1e3 * cnn['conv_s']:.2f} ms of the {1e3 * step:.2f} ms step " \
                f"({100 * cnn['conv_s'] / step:.0f}%), the sgemm time of their im2col shapes " \
                f"{1e3 * cnn['conv_sgemm_s']:.2f} ms ({100 * cnn['conv_sgemm_s'] / cnn['conv_s']:.0f}% of the conv " \
                f"time); all the step's GEMMs {1e3 * cnn['sgemm_step_s']:.2f} ms"
    target(rows, "cnn", name, round(r, 3), 1.0, "x", r >= 1.0, note)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--net-gbps", type=float, default=100)
    ap.add_argument("--net-latency-us", type=float, default=1.5)
    ap.add_argument("--ranks-per-node", type=int, default=64)
    ap.add_argument("--node-mem-gbs", type=float, default=200)
    a = ap.parse_args()
    small, large = load(a.dir, "small-np1"), load(a.dir, "large-np1")
    if not small or not large:
        sys.exit("bench_report: measurements missing in " + a.dir)
    b1, b2 = load(a.dir, "b256-np1"), load(a.dir, "b256-np2")
    ts, tl, tdef = load(a.dir, "torch-small"), load(a.dir, "torch-large"), load(a.dir, "torch-default")
    rows = []
    where = f"{small['threads']} BLAS thread(s), OpenBLAS kernel {small['kernel']}, CPU {small.get('cpu', '?')}"
    if ts:
        r = small["samples_per_s"] / ts["samples_per_s"]
        note = f"dptrain {small['samples_per_s']:.0f}/s, torch {ts['samples_per_s']:.0f}/s with {ts['threads']} " \
               f"thread(s) and the same OpenBLAS kernel; {where}"
        if tdef:
            note += f"; as installed (OpenBLAS picks its own kernel) {tdef['samples_per_s']:.0f}/s, " \
                    f"ratio {small['samples_per_s'] / tdef['samples_per_s']:.2f}"
        note += f"; the step's GEMMs alone would allow {small['sgemm_samples_per_s']:.0f}/s, " \
                f"{small['sgemm_samples_per_s'] / ts['samples_per_s']:.2f}x torch"
        target(rows, 1, "1 rank, 784-512-256-10, batch 128, 1 thread vs PyTorch", round(r, 3), 1.5, "x", r >= 1.5,
               note)
    else:
        rows.append({"target": 1, "name": "vs PyTorch", "result": "SKIPPED",
                     "note": "python3-torch not installed"})
    # The same run's step against its own GEMMs: what the passes around them (optimizer, activations,
    # gather, loss) cost.
    r = small["sgemm_step_s"] / small["step_s"]
    target(rows, "1g", "1 rank, 784-512-256-10, batch 128: sgemm time of the step's shapes / step time", round(r, 3),
           0.90, "", r >= 0.90,
           f"step {1e3 * small['step_s']:.3f} ms, its GEMMs alone {1e3 * small['sgemm_step_s']:.3f} ms, optimizer "
           f"{1e3 * small['optim_s_max']:.3f} ms (streaming its bytes {1e3 * small['stream5_s']:.3f} ms); {where}")
    cnn, tc = load(a.dir, "cnn-np1"), load(a.dir, "torch-cnn")
    cnn_row(rows, cnn, tc)
    r = large["samples_per_s"] / large["sgemm_samples_per_s"]
    target(rows, 2, "784-2048-2048-10, batch 256: training rate / sgemm rate of its shapes", round(r, 3), 0.85, "",
           r >= 0.85, f"{large['gflops']} GFLOP/s; torch {tl['samples_per_s']:.0f} vs dptrain "
                      f"{large['samples_per_s']:.0f} samples/s" if tl else f"{large['gflops']} GFLOP/s")
    b2f = load(a.dir, "b256-np2flat")
    r = b2["samples_per_s"] / b1["samples_per_s"]
    wait, opt = b2["comm_s_max"] / b2["step_s"], b2["optim_s_max"] / b2["step_s"]
    note = f"comm = {b2['memory'].get('comm', '?')}: communication wait {100 * wait:.1f}%, optimizer {100 * opt:.1f}% " \
           f"of the step"
    if b2f:
        note += f"; comm = flat in the same run: {b2f['samples_per_s'] / b1['samples_per_s']:.3f}x, wait " \
                f"{100 * b2f['comm_s_max'] / b2f['step_s']:.1f}%, optimizer {100 * b2f['optim_s_max'] / b2f['step_s']:.1f}%"
    target(rows, 3, "2 ranks vs 1, global batch 256", round(r, 3), 1.85, "x", r >= 1.85, note)
    target(rows, "3b", "2 ranks: (communication wait + optimizer) / step", round(wait + opt, 4), 0.05, "",
           wait + opt <= 0.05, "the reduction (node: barriers and the sum of this rank's slice; flat: the allreduce), "
           "including waiting for the slower rank, and the optimizer's share of the update")
    m2 = b2["memory"]
    if b2f and "model_copies_per_node" in m2:
        m2f = b2f["memory"]
        one = m2["params"] + m2["optimizer"]
        target(rows, "mem", "2 ranks: copies of parameters + optimizer state per node", m2["model_copies_per_node"], 1,
               "", m2["model_copies_per_node"] == 1,
               f"{one / 1e6:.1f} MB per copy; the node's PSS (shared pages counted once) {m2['node_pss'] / 1e6:.1f} MB "
               f"with comm = node against {m2f['node_pss'] / 1e6:.1f} MB with comm = flat "
               f"({m2f['model_copies_per_node']} copies)")
    t, step, acc = time_to(os.path.join(a.dir, "fashion_mlp", "metrics.jsonl"), 0.88)
    target(rows, 4, "fashion_mlp.ini at 2 ranks: training time to 88% test accuracy",
           round(t, 2) if t is not None else None, 5.0, "s", t is not None and t <= 5.0,
           f"first >= 88% at step {step} ({acc})" if t is not None else "never reached 88%")
    share = small["optim_s_max"] / small["step_s"]
    target(rows, "opt", "optimizer step / training step (goal: well under 5%), 1 rank, batch 128",
           round(share, 4), 0.05, "", share < 0.05,
           f"{1e3 * small['optim_s_max']:.3f} ms of {1e3 * small['step_s']:.3f} ms; streaming its bytes "
           f"(read weights, momentum, gradient; write two) alone takes {1e3 * small['stream5_s']:.3f} ms, "
           f"{small['stream5_s'] / small['step_s'] * 100:.1f}% of the step; at batch 256, 2 ranks: "
           f"{100 * b2['optim_s_max'] / b2['step_s']:.1f}%")
    m = small["memory"]
    parts = m["data"] + m["params"] + m["grads"] + m["optimizer"] + m["activations"]
    r = (m["peak_rss"] - m["baseline_rss"]) / parts
    target(rows, 5, "peak RSS above the MPI/BLAS baseline / accounted parts", round(r, 3), 1.25, "x", r <= 1.25,
           f"peak {m['peak_rss'] / 1e6:.1f} MB, baseline {m['baseline_rss'] / 1e6:.1f} MB, parts "
           f"{parts / 1e6:.1f} MB (data {m['data'] / 1e6:.1f}, params {m['params'] / 1e6:.1f}, grads "
           f"{m['grads'] / 1e6:.1f}, optimizer {m['optimizer'] / 1e6:.1f}, activations {m['activations'] / 1e6:.1f})")
    c = large["checkpoint"]
    r = c["bytes_per_s"] / c["plain_bytes_per_s"]
    target(rows, 6, "checkpoint write rate / plain sequential write", round(r, 3), 0.7, "", r >= 0.7,
           f"{c['bytes'] / 1e6:.1f} MB at {c['bytes_per_s'] / 1e6:.0f} MB/s, plain {c['plain_bytes_per_s'] / 1e6:.0f} MB/s")
    d = {(det, np): step_ms(a.dir, f"det-{det}-np{np}") for det in ("false", "true") for np in (1, 2)}
    if None not in d.values():
        r2, r1 = d["true", 2] / d["false", 2], d["true", 1] / d["false", 1]
        target(rows, 7, "fashion_mlp.ini at 2 ranks: deterministic / default step time", round(r2, 3), 1.10, "x",
               r2 <= 1.10, f"{d['true', 2]:.3f} vs {d['false', 2]:.3f} ms; 1 rank: {d['true', 1]:.3f} vs "
                           f"{d['false', 1]:.3f} ms, {r1:.3f}x")

    # Scaling projection (weak scaling at 128 rows per rank). flat: a ring over all P ranks. node: L
    # ranks per node; each sums its slice of the node's L gradient blocks (reads n floats, writes n/L)
    # at the rate the 2-rank node run's reduction had (its whole wait, the pessimistic side), or at the
    # node's memory bandwidth shared by its L ranks (--node-mem-gbs) if that is slower, and updates its
    # slice (the optimizer's time / L); then L rings of n/L floats over the N = P/L nodes share each
    # node's link: the bytes of one ring of n per link, 2(N-1) latencies instead of 2(P-1); and three
    # node barriers (1 us each, assumed).
    n_bytes = 4.0 * small["params"]
    t1 = small["compute_s_max"] + small["optim_s_max"]
    lat, bw = a.net_latency_us * 1e-6, a.net_gbps * 1e9 / 8
    node_run = b2["memory"].get("comm") == "node"
    core_bw = 1.5 * n_bytes / max(b2["comm_s_max"], 1e-6) if node_run else 5 * n_bytes / small["stream5_s"]
    proj = []
    for p in [8, 16, 32, 64, 128, 256, 512, 1024]:
        L = min(a.ranks_per_node, p)
        # flat's ring passes through the node's shared memory too: each of its L ranks copies ~2n in
        # and ~2n out (a read and a write each)
        ar = 2 * (p - 1) * lat + 2 * (p - 1) / p * n_bytes / bw + L * 8 * n_bytes / (a.node_mem_gbs * 1e9)
        n = p // L
        traffic = n_bytes * (1 + 1 / L)
        node = max(traffic / core_bw, L * traffic / (a.node_mem_gbs * 1e9)) + 3e-6 + \
            2 * (n - 1) * lat + 2 * (n - 1) / n * n_bytes / bw
        step, hstep = t1 + ar, small["compute_s_max"] + small["optim_s_max"] / L + node
        proj.append({"ranks": p, "step_ms": round(1e3 * step, 3), "allreduce_ms": round(1e3 * ar, 3),
                     "efficiency": round(t1 / step, 3), "samples_per_s": round(p * 128 / step),
                     "node_step_ms": round(1e3 * hstep, 3), "node_reduce_ms": round(1e3 * node, 3),
                     "node_efficiency": round(t1 / hstep, 3)})
    L = a.ranks_per_node
    report = {"targets": rows, "projection": {"model": "ring allreduce, not overlapped, 128 rows per rank; node: "
                                                       "hierarchical, ranks_per_node ranks per node",
                                              "node_mem_gbs": a.node_mem_gbs,
                                              "ranks_per_node": L,
                                              "net_gbps": a.net_gbps, "net_latency_us": a.net_latency_us,
                                              "intra_node_fit": b2.get("allreduce"), "table": proj},
              "measurements": {"small_np1": small, "large_np1": large, "b256_np1": b1, "b256_np2": b2, "b256_np2flat": b2f,
                               "torch_small": ts, "torch_large": tl, "torch_default": tdef, "cnn_np1": cnn,
                               "torch_cnn": tc}}
    json.dump(report, sys.stdout, indent=1)
    e = sys.stderr
    print(f"\n{'target':<7}{'result':<8}{'value':>9}  {'goal':>6}  what", file=e)
    for r in rows:
        v = r.get("value")
        print(f"{r['target']!s:<7}{r['result']:<8}{v if v is not None else '-':>9}  {r.get('goal', '-')!s:>6}  "
              f"{r['name']}\n{'':15}{r['note']}", file=e)
    print(f"\nprojection ({a.net_gbps:g} Gb/s, {a.net_latency_us:g} us; ring allreduce of "
          f"{n_bytes / 1e6:.1f} MB, not overlapped, 128 rows per rank):", file=e)
    print(f"{'ranks':>7}{'step ms':>10}{'allreduce ms':>14}{'efficiency':>12}{'samples/s':>12}"
          f"{'node: step ms':>15}{'reduce ms':>11}{'efficiency':>12}  (node: {L} ranks per node, "
          f"{a.node_mem_gbs:g} GB/s of memory each)", file=e)
    for r in proj:
        print(f"{r['ranks']:>7}{r['step_ms']:>10}{r['allreduce_ms']:>14}{r['efficiency']:>12}{r['samples_per_s']:>12}"
              f"{r['node_step_ms']:>15}{r['node_reduce_ms']:>11}{r['node_efficiency']:>12}", file=e)


if __name__ == "__main__":
    main()

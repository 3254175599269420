#!/usr/bin/python3
"""scaling_model.py: memory and time of a husai sweep at scale, from rates measured on one core.

A model, not a run: it multiplies measured rates by the sweep's counts, with the formulas written out here
and in BENCHMARKS.md ("Scaling model"), so anyone can put in their own machine's rates and check it
(`make bench` prints the rates: training samples/s at 768 x 16384, PWMCC GFLOP/s, read GB/s).

Memory follows the code as it is (one condition at a time):
  per training task   4 arrays of the parameters (parameters, gradient, Adam m and v): 4 * 4 B * (2 d s + 2 s + d),
                      plus the batch's pre-activations and codes: 4 B * batch * s (+ small per-row buffers)
  per node            the normalised decoders of the condition's S seeds in one shared window (PWMCC):
                      S * d * s * 4 B, or, when that exceeds --window-gb (metrics.window_mb), two blocks of
                      b = floor(window / (2 d s 4 B)) seeds; plus the data, one copy per node (or the
                      streaming budget)
  rank 0              no seed's parameters (each rank writes its own into results.h5); the per-feature best
                      matches of all seed pairs, S^2 * s * 8 B (|cos| and index), plus its share of the
                      pairs' matches while they arrive, ~S^2 s 8 B / ranks, and two decoders for the consensus
                      directions, 2 * d * s * 4 B; whatever the number of conditions
Time:
  training            ceil(S * C / ranks) waves of one task each: rows * epochs / (rate at s) per task;
                      the encoder is ~99% of a step's flops at these widths, so the rate scales as 1 / s
                      from the one measured at s0 (an extrapolation, said in the output)
  PWMCC               S (S - 1) / 2 pairs of 2 d s^2 flops, trained and random-baseline, spread over every core
                      of every node at the measured per-core GFLOP/s
  reading the data    each node reads the whole file once: bytes / (GB/s per node); the nodes read in parallel
                      until the file system's aggregate bandwidth (not modelled) is the limit
"""
import argparse
import math


def gb(x):
    return x / 1e9


def model(a, s, nodes):
    d, S, C = a.d_model, a.seeds, a.conditions
    cores = nodes * a.cores_per_node
    ranks = min(cores, S * C)  # one rank per core, never more ranks than tasks
    params = 2 * d * s + 2 * s + d
    task_mem = 4 * 4 * params + 4 * a.batch * s * 2
    ranks_per_node = math.ceil(ranks / nodes)
    window = S * d * s * 4
    if a.window_gb and window > a.window_gb * 1e9:  # blocks of b seeds, two held at a time
        window = 2 * max(1, int(a.window_gb * 1e9 // (2 * d * s * 4))) * d * s * 4
    data = a.rows * d * 4
    node_mem = ranks_per_node * task_mem + window + data
    rank0_extra = S * S * s * 8 * (1 + 1 / ranks) + 2 * d * s * 4
    # Cores a node has beyond its ranks go to each rank's threads (HUSAI_THREADS), at the efficiency measured
    # at 2 threads (BENCHMARKS.md section 4); more threads per rank are not measured here.
    threads = max(1, a.cores_per_node // ranks_per_node)
    rate = a.train_rate * a.rate_d_sae / s * (1 + (threads - 1) * a.thread_efficiency)
    task_s = a.rows * a.epochs / rate
    waves = math.ceil(S * C / ranks)
    train_s = waves * task_s
    # every condition's trained pairs, and the random baseline's once (conditions of one shape share it)
    pairs = (C + 1) * (S * (S - 1) // 2)
    pwmcc_s = pairs * 2 * d * s * s / (a.pwmcc_gflops * 1e9 * cores)
    read_s = data / (a.read_gbs * 1e9)
    return dict(nodes=nodes, cores=cores, ranks=ranks, threads=threads, task_mem=task_mem, node_mem=node_mem,
                rank0=rank0_extra + task_mem, waves=waves, task_s=task_s, train_s=train_s,
                pwmcc_s=pwmcc_s, read_s=read_s, total_s=read_s + train_s + pwmcc_s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--d-sae", type=int, nargs="+", default=[16384, 131072])
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--conditions", type=int, default=1)
    p.add_argument("--rows", type=float, default=1e6, help="training rows (tokens) per epoch")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--nodes", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--cores-per-node", type=int, default=64)
    p.add_argument("--train-rate", type=float, default=3562.0,
                   help="training samples/s on one core at --rate-d-sae (BENCHMARKS.md section 1)")
    p.add_argument("--rate-d-sae", type=int, default=16384)
    p.add_argument("--pwmcc-gflops", type=float, default=86.9, help="per core (BENCHMARKS.md section 3)")
    p.add_argument("--thread-efficiency", type=float, default=0.88,
                   help="speed-up per extra thread of a rank (2 threads: 1.76x, section 4)")
    p.add_argument("--window-gb", type=float, default=0.0,
                   help="metrics.window_mb / 1000: the PWMCC window's budget per node (0: all S decoders)")
    p.add_argument("--read-gbs", type=float, default=1.84, help="per node, cold cache (section 5)")
    a = p.parse_args()
    print(f"{a.seeds} seeds x {a.conditions} condition(s), d_model {a.d_model}, {a.rows:.3g} rows x "
          f"{a.epochs} epoch(s), batch {a.batch}, {a.cores_per_node} cores per node, one rank per task "
          f"(at most one per core), a node's other cores as threads;")
    print(f"rates: {a.train_rate:g} samples/s per core at d_sae {a.rate_d_sae} (scaled as 1/d_sae), "
          f"PWMCC {a.pwmcc_gflops:g} GFLOP/s per core, read {a.read_gbs:g} GB/s per node\n")
    print("| d_sae | nodes | ranks x threads | memory per task | per node | rank 0 | waves x task | training | "
          "PWMCC (trained + random) | read | total |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in a.d_sae:
        for n in a.nodes:
            m = model(a, s, n)
            print(f"| {s} | {n} | {m['ranks']} x {m['threads']} | {gb(m['task_mem']):.2f} GB | {gb(m['node_mem']):.0f} GB | "
                  f"{gb(m['rank0']):.1f} GB | {m['waves']} x {m['task_s']:.0f} s | {m['train_s'] / 60:.1f} min | "
                  f"{m['pwmcc_s'] / 60:.1f} min | {m['read_s']:.1f} s | {m['total_s'] / 60:.1f} min |")


if __name__ == "__main__":
    main()

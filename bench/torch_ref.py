#!/usr/bin/python3
"""torch_ref.py: PyTorch (CPU) reference for husai's training throughput.

Trains HUSAI's TopK SAE, written the way HUSAI wrote it in PyTorch, on the rows of an HDF5 file for a
fixed number of optimiser steps and prints one JSON line with samples per second:

  pre   = x W_enc^T + b_enc                       (nn.Linear with bias)
  z     = zeros.scatter(topk(pre, k))             signed top-k per row, no ReLU
  x_hat = z W_dec^T                               (nn.Linear without bias, dense decode)
  loss  = mean((x_hat - x)^2)                     autograd backward
  Adam(lr 3e-4, betas 0.9/0.999, eps 1e-8); decoder columns renormalised after every step;
  Kaiming-uniform init W_enc ~ U(+-sqrt(6/d_model)), b_enc = 0, W_dec ~ U(+-sqrt(6/d_sae)) with unit
  columns; a fresh shuffle of the rows every epoch (the last batch may be short).

The timed region is the same as husai's (bench_husai --train): gather the batch, forward, backward,
Adam, renormalise, for STEPS steps after WARMUP untimed ones.

usage: torch_ref.py DATA.h5 --d-sae 128 --k 32 --batch 2048 --steps 100 --threads 1 [--warmup 1]
Needs Debian's python3-torch (1.13, CPU), numpy and h5py; run with /usr/bin/python3.
"""
import argparse
import json
import time

import h5py
import numpy as np
import torch
import torch.nn.functional as F


class TopKSAE(torch.nn.Module):
    def __init__(self, d_model, d_sae, k):
        super().__init__()
        self.k = k
        self.encoder = torch.nn.Linear(d_model, d_sae, bias=True)
        self.decoder = torch.nn.Linear(d_sae, d_model, bias=False)
        with torch.no_grad():
            be = (6.0 / d_model) ** 0.5
            self.encoder.weight.uniform_(-be, be)
            self.encoder.bias.zero_()
            bd = (6.0 / d_sae) ** 0.5
            self.decoder.weight.uniform_(-bd, bd)
        self.renormalise()

    def forward(self, x):
        pre = self.encoder(x)
        vals, idx = torch.topk(pre, self.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        return self.decoder(z)

    @torch.no_grad()
    def renormalise(self):
        W = self.decoder.weight  # [d_model, d_sae]: columns are features
        W.div_(W.norm(dim=0, keepdim=True))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--dataset", default="/activations")
    p.add_argument("--d-sae", type=int, default=128)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    with h5py.File(a.data, "r") as f:
        X = torch.from_numpy(np.ascontiguousarray(f[a.dataset][...], dtype=np.float32))
    n, d_model = X.shape
    model = TopKSAE(d_model, a.d_sae, a.k)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed)

    state = {"perm": torch.randperm(n, generator=gen), "pos": 0, "loss": 0.0}

    def step():
        if state["pos"] >= n:  # new epoch, new order
            state["perm"], state["pos"] = torch.randperm(n, generator=gen), 0
        idx = state["perm"][state["pos"]:state["pos"] + a.batch]
        state["pos"] += a.batch
        x = X[idx]
        loss = F.mse_loss(model(x), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.renormalise()
        return loss

    for _ in range(a.warmup):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        loss = step()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"impl": "torch", "torch": torch.__version__, "d_model": d_model, "d_sae": a.d_sae, "k": a.k,
                      "batch": a.batch, "steps": a.steps, "threads": torch.get_num_threads(), "rows": n,
                      "seconds": round(dt, 4), "cpu_seconds": round(cpu, 4), "samples_per_s": round(a.steps * a.batch / dt, 1),
                      "loss": float(loss)}))


if __name__ == "__main__":
    main()

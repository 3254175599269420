#!/usr/bin/python3
"""Independent PyTorch reference for HUSAI's TopK SAE step; writes tests/reference/topk_step.h5.

Recipe (HUSAI): encoder Linear(d_model, d_sae) with bias; signed top-k of the pre-activations
per row (no ReLU) scattered into zeros; decoder Linear(d_sae, d_model, bias=False); MSE over all
elements; torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8); after every step the decoder
columns are rescaled to unit L2 norm.

Each case /caseN holds
  attributes: d_model, d_sae, k (int32), lr (float64), min_margin (float64: the smallest gap,
              over all rows, between the k-th and (k+1)-th largest pre-activation at the
              initial parameters; a perturbation smaller than this cannot change the top-k set)
  datasets:   x [B, d_model], W_enc [d_sae, d_model], b_enc [d_sae], W_dec [d_model, d_sae]
              (PyTorch layout, unit columns), loss (float64 scalar of the float32 loss),
              x_hat [B, d_model], grad_W_enc, grad_b_enc, grad_W_dec (before any step),
              and after two optimiser steps on the same batch (step, renormalise, step,
              renormalise): W_enc_2, b_enc_2, W_dec_2.
All arrays are float32 except loss. Run: /usr/bin/python3 tests/reference/torch_topk_step.py
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "topk_step.h5")

# Rows whose k-th / (k+1)-th pre-activation gap is below this are redrawn, so the C test can
# perturb parameters by ~1e-3 for finite differences without changing the selected set.
ROW_MARGIN = 0.05

CASES = [
    # d_model, d_sae, k, batch, lr, b_enc range (lo, hi)
    dict(d_model=16, d_sae=32, k=4, batch=64, lr=1e-3, b_lo=-0.5, b_hi=0.5),
    # strongly negative biases: most pre-activations are negative, so the signed top-k
    # selects negative values in many rows (no ReLU anywhere)
    dict(d_model=24, d_sae=12, k=3, batch=50, lr=5e-3, b_lo=-3.0, b_hi=-2.0),
]


def topk_margin(pre, k):
    """Per-row gap between the k-th and (k+1)-th largest value (inf if k == d_sae)."""
    s = torch.sort(pre.double(), dim=-1, descending=True).values
    if k >= s.shape[-1]:
        return torch.full((s.shape[0],), float("inf"), dtype=torch.float64)
    return s[:, k - 1] - s[:, k]


class TopKSAE(torch.nn.Module):
    def __init__(self, d_model, d_sae, k):
        super().__init__()
        self.k = k
        self.encoder = torch.nn.Linear(d_model, d_sae, bias=True)
        self.decoder = torch.nn.Linear(d_sae, d_model, bias=False)

    def forward(self, x):
        pre = self.encoder(x)
        vals, idx = torch.topk(pre, self.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, idx, vals)
        return self.decoder(z), pre

    @torch.no_grad()
    def renormalise(self):
        W = self.decoder.weight  # [d_model, d_sae], columns are features
        W.data /= W.data.norm(dim=0, keepdim=True)


def build_case(c):
    d_model, d_sae, k, B = c["d_model"], c["d_sae"], c["k"], c["batch"]
    sae = TopKSAE(d_model, d_sae, k)
    with torch.no_grad():
        be = (6.0 / d_model) ** 0.5
        sae.encoder.weight.uniform_(-be, be)
        sae.encoder.bias.uniform_(c["b_lo"], c["b_hi"])
        bd = (6.0 / d_sae) ** 0.5
        sae.decoder.weight.uniform_(-bd, bd)
    sae.renormalise()

    # Draw rows, keeping only those with a clear top-k margin at the initial parameters.
    rows = []
    while len(rows) < B:
        cand = torch.randn(4 * B, d_model, dtype=torch.float32)
        with torch.no_grad():
            m = topk_margin(sae.encoder(cand), k)
        rows.extend(cand[m >= ROW_MARGIN])
    x = torch.stack(rows[:B]).contiguous()

    W_enc0 = sae.encoder.weight.detach().clone()
    b_enc0 = sae.encoder.bias.detach().clone()
    W_dec0 = sae.decoder.weight.detach().clone()

    opt = torch.optim.Adam(sae.parameters(), lr=c["lr"], betas=(0.9, 0.999), eps=1e-8)

    # Step 1: the recorded forward/backward.
    opt.zero_grad()
    x_hat, pre = sae(x)
    loss = F.mse_loss(x_hat, x)
    loss.backward()
    margin0 = topk_margin(pre.detach(), k).min().item()
    out = dict(
        x=x, W_enc=W_enc0, b_enc=b_enc0, W_dec=W_dec0,
        loss=float(loss.item()), x_hat=x_hat.detach().clone(),
        grad_W_enc=sae.encoder.weight.grad.detach().clone(),
        grad_b_enc=sae.encoder.bias.grad.detach().clone(),
        grad_W_dec=sae.decoder.weight.grad.detach().clone(),
        margin0=margin0,
        n_negative_selected=int((torch.topk(pre.detach(), k, dim=-1).values < 0).sum().item()),
    )
    opt.step()
    sae.renormalise()

    # Step 2 on the same batch.
    opt.zero_grad()
    x_hat2, pre2 = sae(x)
    F.mse_loss(x_hat2, x).backward()
    margin1 = topk_margin(pre2.detach(), k).min().item()
    opt.step()
    sae.renormalise()
    out.update(
        W_enc_2=sae.encoder.weight.detach().clone(),
        b_enc_2=sae.encoder.bias.detach().clone(),
        W_dec_2=sae.decoder.weight.detach().clone(),
        margin1=margin1,
    )

    # Sanity checks that make the fixture robust against float rounding in another implementation:
    # the top-k set must be unambiguous at both steps, and no non-zero gradient may be so small
    # that its sign (which drives Adam's first update) is decided by rounding.
    assert margin0 >= ROW_MARGIN, margin0
    assert margin1 >= 1e-3, f"top-k margin after step 1 too small: {margin1}"
    for name in ("grad_W_enc", "grad_b_enc", "grad_W_dec"):
        g = out[name].abs()
        nz = g[g > 0]
        assert nz.numel() == 0 or nz.min().item() > 1e-5 * g.max().item(), (name, nz.min().item())
    return out


def main():
    torch.manual_seed(20240611)
    torch.set_num_threads(1)
    with h5py.File(OUT, "w") as f:
        f.attrs["generator"] = "tests/reference/torch_topk_step.py"
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["n_cases"] = np.int32(len(CASES))
        for i, c in enumerate(CASES, start=1):
            r = build_case(c)
            g = f.create_group(f"case{i}")
            g.attrs["d_model"] = np.int32(c["d_model"])
            g.attrs["d_sae"] = np.int32(c["d_sae"])
            g.attrs["k"] = np.int32(c["k"])
            g.attrs["lr"] = np.float64(c["lr"])
            g.attrs["min_margin"] = np.float64(r["margin0"])
            for name in ("x", "W_enc", "b_enc", "W_dec", "x_hat", "grad_W_enc", "grad_b_enc", "grad_W_dec",
                         "W_enc_2", "b_enc_2", "W_dec_2"):
                g.create_dataset(name, data=r[name].numpy().astype(np.float32))
            g.create_dataset("loss", data=np.float64(r["loss"]))
            print(f"case{i}: d_model={c['d_model']} d_sae={c['d_sae']} k={c['k']} B={c['batch']} lr={c['lr']} "
                  f"loss={r['loss']:.6g} margin0={r['margin0']:.4g} margin1={r['margin1']:.4g} "
                  f"negative_selected={r['n_negative_selected']}")
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Generate the shipped modular-addition activation dataset for husai.

What this script does
---------------------
1. Trains a small 2-layer transformer (the HUSAI shape: d_model 128, 4 heads,
   MLP 512, learned token + position embeddings, pre-LayerNorm blocks with
   causal attention and a GELU MLP, a final LayerNorm and an unembedding; no
   dropout) on modular addition  c = (a + b) mod 113.

   Input sequence:  [BOS, a, '+', b, '=']   (length 5)
   Target:          c, read from the logits at the '=' position (index 4).

   Label-leak fix: the earlier HUSAI study predicted c at a position whose
   input token already was c, so the model could simply copy it.  Here c never
   appears in the input; the model has to compute it.

2. Uses a fixed 90% / 10% train / held-out split of all 113*113 = 12,769
   (a, b) pairs, full-batch AdamW (lr 1e-3, weight decay 1.0, betas
   (0.9, 0.98)), and trains until held-out accuracy stays >= 99.5% for a few
   consecutive evaluations (with a hard step cap).  It exits with an error
   if the model never generalises (final held-out accuracy < 99%).

3. Extracts the residual stream at the '=' position after the last
   transformer block (i.e. the input to the final LayerNorm) for ALL pairs,
   row index = a * 113 + b, as float32 [12769, 128].

4. Writes it atomically (temp file + os.replace) to an HDF5 file with h5py.

Run with Debian's interpreter:   /usr/bin/python3 data/make_modadd.py
"""

import argparse
import math
import os
import sys
import tempfile
import time


def _early_thread_count():
    """Read --threads before numpy/torch are imported.

    Debian's torch uses OpenBLAS (pthreads build), which starts one worker
    per core when the library loads and ignores torch.set_num_threads().
    The only reliable cap is the environment, set before the import.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=1)
    ns, _ = p.parse_known_args()
    return max(1, ns.threads)


for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(_early_thread_count())

import h5py  # noqa: E402  (must follow the thread-count environment setup)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ----------------------------------------------------------------------------
# Problem / model constants (fixed: the dataset's meaning depends on them)
# ----------------------------------------------------------------------------
P = 113                       # modulus; numbers 0..P-1 are tokens 0..P-1
BOS, PLUS, EQ = P, P + 1, P + 2
VOCAB = P + 3                 # 113 numbers + BOS, '+', '='
SEQ_LEN = 5                   # [BOS, a, +, b, =]
EQ_POS = 4                    # position whose logits predict c
D_MODEL = 128
N_HEADS = 4
D_MLP = 512
N_LAYERS = 2
TRAIN_FRACTION = 0.9


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-LayerNorm transformer block: x += attn(ln1(x)); x += mlp(ln2(x))."""

    def __init__(self, d_model, n_heads, d_mlp):
        super().__init__()
        assert d_model % n_heads == 0
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, d_model)
        )
        # Causal mask: each position attends to itself and earlier positions.
        # Position 4 ('=') therefore sees the whole sequence.
        mask = torch.tril(torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x, query_pos=None):
        """Apply the block.

        If query_pos is given, only that position's output is computed
        (shape [n, 1, d]).  This is exact for the last block, whose other
        positions are never read, and saves most of its compute.
        """
        n, t, d = x.shape
        h = self.ln1(x)
        q, k, v = self.qkv(h).split(d, dim=-1)
        if query_pos is not None:
            x = x[:, query_pos:query_pos + 1]
            q = q[:, query_pos:query_pos + 1]
            qpos = torch.tensor([query_pos])
        else:
            qpos = torch.arange(t)
        tq = q.shape[1]
        # [n, heads, t, d_head]
        q = q.reshape(n, tq, self.n_heads, self.d_head).transpose(1, 2)
        k = k.reshape(n, t, self.n_heads, self.d_head).transpose(1, 2)
        v = v.reshape(n, t, self.n_heads, self.d_head).transpose(1, 2)
        # Attention scores.  The sequence is only 5 long, so batched matmul
        # over ~46k tiny 5x5 problems is very slow on CPU; instead loop over
        # the 5 key positions with elementwise multiply-and-sum (exact).
        scale = 1.0 / math.sqrt(self.d_head)
        att = torch.stack([(q * k[:, :, j:j + 1]).sum(-1) for j in range(t)],
                          dim=-1) * scale                 # [n, h, tq, t]
        att = att.masked_fill(~self.mask[qpos, :t], float("-inf"))
        att = att.softmax(dim=-1)
        out = sum(att[..., j:j + 1] * v[:, :, j:j + 1] for j in range(t))
        out = out.transpose(1, 2).reshape(n, tq, d)
        x = x + self.proj(out)
        x = x + self.mlp(self.ln2(x))
        return x


class ModAddTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, D_MODEL)
        self.pos_emb = nn.Parameter(torch.randn(SEQ_LEN, D_MODEL) * 0.02)
        self.blocks = nn.ModuleList(
            [Block(D_MODEL, N_HEADS, D_MLP) for _ in range(N_LAYERS)]
        )
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.unembed = nn.Linear(D_MODEL, VOCAB, bias=False)

    def residual_eq(self, tokens):
        """Residual stream at '=' after the final block (before ln_f): [n, d].

        Earlier blocks run on all positions; the last block only computes
        the '=' position, the only one whose output is ever used.
        """
        x = self.tok_emb(tokens) + self.pos_emb[: tokens.shape[1]]
        for i, blk in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x = blk(x, query_pos=EQ_POS if last else None)
        return x[:, 0]

    def forward(self, tokens):
        """Logits at the '=' position only: [n, VOCAB]."""
        return self.unembed(self.ln_f(self.residual_eq(tokens)))


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------
def all_pairs():
    """All (a, b) pairs in a-major order (row = a*P + b), tokens and labels."""
    a = np.repeat(np.arange(P), P)
    b = np.tile(np.arange(P), P)
    label = (a + b) % P
    tokens = np.stack(
        [np.full_like(a, BOS), a, np.full_like(a, PLUS), b, np.full_like(a, EQ)],
        axis=1,
    )
    # Sanity: the answer never appears as an input token at the '=' position.
    assert np.all(tokens[:, EQ_POS] == EQ)
    return a, b, label, tokens


def split_mask(seed, n):
    """Fixed boolean train mask: exactly round(0.9 * n) rows are train."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_train = int(round(TRAIN_FRACTION * n))
    is_train = np.zeros(n, dtype=bool)
    is_train[perm[:n_train]] = True
    return is_train


@torch.no_grad()
def accuracy(model, tokens, labels, batch=4096):
    model.eval()
    correct = 0
    for i in range(0, len(tokens), batch):
        pred = model(tokens[i:i + batch]).argmax(dim=-1)
        correct += (pred == labels[i:i + batch]).sum().item()
    model.train()
    return correct / len(tokens)


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------
def parse_args():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(here, "modadd_p113.h5"),
                    help="output HDF5 path (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0,
                    help="seed for split, init and training (default 0)")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for torch/OpenBLAS (default 1)")
    ap.add_argument("--max-steps", type=int, default=5000,
                    help="hard cap on optimiser steps (default 5000)")
    ap.add_argument("--eval-every", type=int, default=50,
                    help="evaluate / print progress every N steps (default 50)")
    ap.add_argument("--patience", type=int, default=3,
                    help="stop after this many consecutive evals with held-out "
                         "accuracy >= --target (default 3)")
    ap.add_argument("--target", type=float, default=0.995,
                    help="early-stop held-out accuracy (default 0.995)")
    ap.add_argument("--min-acc", type=float, default=0.99,
                    help="fail if final held-out accuracy is below this")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1.0)
    return ap.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(max(1, args.threads))
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    a, b, label, tokens = all_pairs()
    n = len(a)
    is_train = split_mask(args.seed, n)

    tok_t = torch.from_numpy(tokens).long()
    lab_t = torch.from_numpy(label).long()
    tr_idx = torch.from_numpy(np.flatnonzero(is_train))
    te_idx = torch.from_numpy(np.flatnonzero(~is_train))
    x_tr, y_tr = tok_t[tr_idx], lab_t[tr_idx]
    x_te, y_te = tok_t[te_idx], lab_t[te_idx]
    print(f"pairs={n} train={len(tr_idx)} heldout={len(te_idx)} "
          f"seed={args.seed} threads={torch.get_num_threads()} "
          f"torch={torch.__version__}", flush=True)

    model = ModAddTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr,
                            weight_decay=args.weight_decay, betas=(0.9, 0.98))

    # Full-batch training with early stopping on held-out accuracy.
    t0 = time.time()
    streak = 0
    step = 0
    te_acc = 0.0
    while step < args.max_steps:
        loss = F.cross_entropy(model(x_tr), y_tr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if not torch.isfinite(loss):
            sys.exit(f"error: non-finite training loss at step {step}")

        if step % args.eval_every == 0 or step == args.max_steps:
            te_acc = accuracy(model, x_te, y_te)
            streak = streak + 1 if te_acc >= args.target else 0
            print(f"step {step:6d}  train_loss {loss.item():.5f}  "
                  f"heldout_acc {te_acc:.4f}  elapsed {time.time() - t0:7.1f}s",
                  flush=True)
            if streak >= args.patience:
                break
    train_secs = time.time() - t0

    tr_acc = accuracy(model, x_tr, y_tr)
    te_acc = accuracy(model, x_te, y_te)
    print(f"done: steps={step} train_acc={tr_acc:.4f} heldout_acc={te_acc:.4f} "
          f"train_time={train_secs:.1f}s", flush=True)
    if te_acc < args.min_acc:
        sys.exit(f"error: model did not generalise: held-out accuracy "
                 f"{te_acc:.4f} < {args.min_acc} after {step} steps "
                 f"(raise --max-steps or change --seed)")

    # Residual stream at '=' after the last block, all pairs, a-major order.
    model.eval()
    with torch.no_grad():
        acts = torch.cat([model.residual_eq(tok_t[i:i + 4096])
                          for i in range(0, n, 4096)])
    acts = acts.numpy().astype(np.float32, copy=False)
    assert acts.shape == (n, D_MODEL)
    if not np.all(np.isfinite(acts)):
        sys.exit("error: non-finite activations")

    # Atomic write: temp file in the destination directory, then os.replace.
    out = os.path.abspath(args.out)
    out_dir = os.path.dirname(out)
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".modadd_", suffix=".h5.tmp", dir=out_dir)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["description"] = (
                "Residual-stream activations of a 2-layer transformer trained "
                f"on (a + b) mod {P}; one row per (a, b) pair, row = a*{P} + b.")
            d = f.create_dataset("activations", data=acts,
                                 chunks=(1024, D_MODEL))
            f.create_dataset("a", data=a.astype(np.int32))
            f.create_dataset("b", data=b.astype(np.int32))
            f.create_dataset("label", data=label.astype(np.int32))
            f.create_dataset("is_train", data=is_train.astype(np.uint8))
            d.attrs["source"] = (
                f"2-layer pre-LN transformer (d_model {D_MODEL}, {N_HEADS} heads, "
                f"MLP {D_MLP}) trained on (a+b) mod {P}, input [BOS,a,+,b,=], "
                "c never in input")
            d.attrs["p"] = P
            d.attrs["d_model"] = D_MODEL
            d.attrs["layer"] = ("resid_post of block 1 (last of 2 blocks), "
                                "before final LayerNorm")
            d.attrs["position"] = "'=' token, index 4"
            d.attrs["train_fraction"] = TRAIN_FRACTION
            d.attrs["heldout_accuracy"] = te_acc
            d.attrs["train_accuracy"] = tr_acc
            d.attrs["steps"] = step
            d.attrs["seed"] = args.seed
            d.attrs["generator"] = "data/make_modadd.py"
            # torch.__version__ is a str subclass h5py cannot store as-is.
            d.attrs["torch_version"] = str(torch.__version__)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    print(f"wrote {out}  activations {acts.shape} float32", flush=True)


if __name__ == "__main__":
    main()

"""A compact PyTorch implementation of scDD's two hot loops, for `scdd bench torch`.

Same graph as scdd's bundles (encoder/decoder: [Linear, BatchNorm1d, PReLU] blocks; the
denoiser's time MLP, class table, down/up blocks with LayerNorm and skips), same sizes, same
batch sizes, same optimiser settings; random weights (speed does not depend on their values).

    python torch_reference.py SPEC.json OUT.json

SPEC.json: {"x": "cells.f32", "labels": "labels.u32", "n": N, "genes": G, "classes": C,
"latent": L, "hidden": [..], "den_hidden": [..], "emb": E, "T": T, "beta_min": b0,
"beta_max": b1, "threads": k, "train_steps": S, "batch": B, "lr": lr, "ema": d,
"distill_steps": K, "spc": [1, 10], "timestep": t, "real_batch": R, "distill_lr": r,
"head_steps": 5, "head_reset": 10, "head_lr": 0.1}
Writes {"train_steps_per_s": .., "distill": [{"spc": s, "steps_per_s": ..}, ..]}.
Timings cover the optimisation loops only (data loading and set-up excluded), as scdd's do.
"""
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def mlp(d_in, hidden, d_out):
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.BatchNorm1d(h), nn.PReLU(1)]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class Denoiser(nn.Module):
    def __init__(self, latent, hidden, emb, classes):
        super().__init__()
        self.emb = emb
        self.time = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_table = nn.Parameter(torch.randn(classes, emb))
        dims = [latent] + hidden
        self.down = nn.ModuleList(self._block(dims[i], dims[i + 1], emb) for i in range(len(hidden)))
        self.up = nn.ModuleList(self._block(hidden[j + 1], hidden[j], emb) for j in range(len(hidden) - 1))
        self.out = nn.Linear(hidden[0], latent)

    @staticmethod
    def _block(i, o, e):
        return nn.ModuleDict({"linear": nn.Linear(i, o), "emb": nn.Linear(e, o), "norm": nn.LayerNorm(o)})

    def sinusoid(self, t):
        half = self.emb // 2
        f = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        a = t.float()[:, None] * f[None, :]
        return torch.cat([a.cos(), a.sin()], 1)

    def forward(self, z, t, c):
        e = F.silu(self.time(self.sinusoid(t)) + self.class_table[c])
        h, skips = z, []
        for b in self.down:
            h = F.silu(b["norm"](b["linear"](h) + b["emb"](e)))
            skips.append(h)
        for j in reversed(range(len(self.up))):
            b = self.up[j]
            h = F.silu(b["norm"](b["linear"](h) + b["emb"](e))) + skips[j]
        return self.out(h)


def head_weight_grad(w, b, f, cls):
    p = torch.softmax(f @ w.t() + b, -1)
    onehot = torch.zeros_like(p)
    onehot[:, cls] = 1.0
    return (p - onehot).t() @ f / f.shape[0]


def gradient_distance(gs, gr):
    dot = (gs * gr).sum(-1)
    return (1 - dot / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)).sum()


def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    n, g, L, C = spec["n"], spec["genes"], spec["latent"], spec["classes"]
    x = torch.from_numpy(np.fromfile(spec["x"], dtype=np.float32).reshape(n, g))
    y = torch.from_numpy(np.fromfile(spec["labels"], dtype=np.uint32).astype(np.int64))
    scale = math.sqrt(L)
    enc = mlp(g, spec["hidden"], L).eval()
    dec = nn.Sequential(mlp(L, spec["hidden"][::-1], g), nn.Softplus()).eval()
    den = Denoiser(L, spec["den_hidden"], spec["emb"], C)
    T = spec["T"]
    betas = torch.linspace(spec["beta_min"], spec["beta_max"], T, dtype=torch.float64)
    ab = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)]).float()

    def encode(v):
        return F.normalize(enc(v), dim=1) * scale

    with torch.no_grad():
        z_all = torch.cat([encode(x[i:i + 2048]) for i in range(0, n, 2048)])

    # ---- SCDG training: x0-prediction, AdamW, EMA
    opt = torch.optim.AdamW(den.parameters(), lr=spec["lr"], weight_decay=0.0)
    ema = [p.detach().clone() for p in den.parameters()]
    B = min(spec["batch"], n)
    t0 = time.perf_counter()
    perm, k = torch.randperm(n), 0
    for step in range(spec["train_steps"]):
        if k + B > n:
            perm, k = torch.randperm(n), 0
        idx = perm[k:k + B]
        k += B
        z0, c = z_all[idx], y[idx]
        t = torch.randint(1, T + 1, (len(idx),))
        eps = torch.randn_like(z0)
        zt = ab[t].sqrt()[:, None] * z0 + (1 - ab[t]).sqrt()[:, None] * eps
        loss = F.mse_loss(den(zt, t, c), z0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        d = min(spec["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(den.parameters()), 1 - d)
    train_s = time.perf_counter() - t0
    den.eval()
    for p in list(enc.parameters()) + list(dec.parameters()) + list(den.parameters()):
        p.requires_grad_(False)

    # ---- distillation: DM + DC on encoder features (real features computed once)
    with torch.no_grad():
        feats = torch.cat([encode(x[i:i + 2048]) for i in range(0, n, 2048)])
    fscale = feats.norm(dim=1).mean()
    feats = feats / fscale
    present = sorted(set(y.tolist()))
    rows = {c: (y == c).nonzero().flatten() for c in present}
    means = torch.stack([feats[rows[c]].mean(0) for c in present])
    results = []
    tstep = spec["timestep"]
    for spc in spec["spc"]:
        init = torch.cat([rows[c][torch.randint(len(rows[c]), (spc,))] for c in present])
        labels = torch.tensor([c for c in present for _ in range(spc)])
        with torch.no_grad():
            z = encode(x[init]) * ab[tstep].sqrt() + torch.randn(len(init), L) * (1 - ab[tstep]).sqrt()
        z = z.clone().requires_grad_(True)
        rms = z.detach().pow(2).mean().sqrt().item()
        zopt = torch.optim.Adam([z], lr=spec["distill_lr"] * rms)
        tt = torch.full((len(init),), tstep)
        norm = [None, None]
        w = b = None
        t0 = time.perf_counter()
        for step in range(spec["distill_steps"]):
            if step % spec["head_reset"] == 0:
                bound = 1 / math.sqrt(L)
                w = torch.empty(C, L).uniform_(-bound, bound)
                b = torch.empty(C).uniform_(-bound, bound)
            s = dec(den(z, tt, labels))
            f = encode(s) / fscale
            dm = sum(((means[k] - f[k * spc:(k + 1) * spc].mean(0)) ** 2).sum() for k in range(len(present)))
            dc = 0.0
            for k, c in enumerate(present):
                r = rows[c][torch.randint(len(rows[c]), (min(spec["real_batch"], len(rows[c])),))]
                g_real = head_weight_grad(w, b, feats[r], c).detach()
                g_syn = head_weight_grad(w, b, f[k * spc:(k + 1) * spc], c)
                dc = dc + gradient_distance(g_syn, g_real)
            if norm[0] is None:
                norm = [max(dm.item(), 1e-12), max(dc.item(), 1e-12)]
            loss = dm / norm[0] + dc / norm[1]
            zopt.zero_grad()
            loss.backward()
            zopt.step()
            with torch.no_grad():
                fs = encode(dec(den(z, tt, labels))) / fscale
                for _ in range(spec["head_steps"]):
                    p = torch.softmax(fs @ w.t() + b, -1)
                    gl = p - F.one_hot(labels, C).float()
                    w = w - spec["head_lr"] * gl.t() @ fs / len(fs)
                    b = b - spec["head_lr"] * gl.sum(0) / len(fs)
            _ = loss.item()
        results.append({"spc": spc, "steps_per_s": spec["distill_steps"] / (time.perf_counter() - t0)})
    json.dump({"train_steps_per_s": spec["train_steps"] / train_s, "distill": results, "torch": torch.__version__}, open(sys.argv[2], "w"))


if __name__ == "__main__":
    main()

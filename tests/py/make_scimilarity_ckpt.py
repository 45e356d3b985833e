#!/usr/bin/env python3
"""Builds small, randomly initialised SCimilarity-format model folders for scdd's import tests.

SCimilarity (Genentech) ships a model as a folder with ``encoder.ckpt`` and ``decoder.ckpt``
(``torch.save({"state_dict": module.state_dict()})``), ``layer_sizes.json`` (encoder
state-dict key -> shape) and ``gene_order.tsv`` (one gene per line). Its modules:

* Encoder: ``network`` = ModuleList of ``Sequential(Dropout, Linear, BatchNorm1d, PReLU)``
  blocks (first dropout = input_dropout), then a final ``Linear`` to the latent size; the output
  is L2-normalised (``F.normalize(x, p=2, dim=1)``).
* Decoder (hidden sizes reversed): block 0 is ``Sequential(Linear, BatchNorm1d, PReLU)``, later
  blocks ``Sequential(Dropout, Linear, BatchNorm1d, PReLU)``, then ``Linear`` to the genes.

The modules below are written from that description, so their state-dict keys
(``network.0.1.weight``, ``network.0.2.running_var``, ``network.2.weight`` ...) are SCimilarity's.

Writes under --out:
  model/        encoder.ckpt, decoder.ckpt, layer_sizes.json, gene_order.tsv, hyperparameters.json
  legacy/       the same weights saved with the pre-1.6 (non-zip) torch.save format
  extra_key/    encoder.ckpt with one key SCimilarity's encoder does not have
  bad_shape/    encoder.ckpt whose network.1.2.running_var has the wrong length
  reference.json  {"backend", "genes", "cells", "x", "z", "x_hat"}: log-normalised cells from
                  --h5ad (target sum 1e4, log1p, aligned to gene_order.tsv), the encoder's output
                  z and the decoder's output on z, all in eval mode.

Real PyTorch builds the nn.Modules, loads the weights with ``load_state_dict(strict=True)`` (so
the key names are checked against the module structure), saves them with ``torch.save`` and runs
the modules for the reference outputs.
"""
import argparse
import collections
import json
import os
import sys
import zipfile

import numpy as np

BN_EPS = 1e-5


# --------------------------------------------------------------------------------------------
# Parameters (numpy), in torch's state_dict order
# --------------------------------------------------------------------------------------------

def linear_params(rng, n_in, n_out):
    bound = 1.0 / np.sqrt(n_in)
    w = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return [("weight", w), ("bias", b)]


def bn_params(rng, dim):
    # Non-trivial running statistics and affine parameters, so eval-mode BN matters.
    return [
        ("weight", rng.uniform(0.5, 1.5, size=dim).astype(np.float32)),
        ("bias", (0.1 * rng.standard_normal(dim)).astype(np.float32)),
        ("running_mean", (0.3 * rng.standard_normal(dim)).astype(np.float32)),
        ("running_var", rng.uniform(0.2, 2.0, size=dim).astype(np.float32)),
        ("num_batches_tracked", np.array(1234, dtype=np.int64)),
    ]


def prelu_params(rng):
    return [("weight", rng.uniform(0.05, 0.4, size=1).astype(np.float32))]


def block(rng, prefix, n_in, n_out, with_dropout):
    """Sequential([Dropout,] Linear, BatchNorm1d, PReLU) under `prefix`."""
    o = 1 if with_dropout else 0
    out = []
    for j, params in ((o, linear_params(rng, n_in, n_out)), (o + 1, bn_params(rng, n_out)), (o + 2, prelu_params(rng))):
        out += [(f"{prefix}.{j}.{p}", v) for p, v in params]
    return out


def encoder_state(rng, n_genes, hidden, latent):
    sd, d = [], n_genes
    for i, h in enumerate(hidden):
        sd += block(rng, f"network.{i}", d, h, with_dropout=True)
        d = h
    sd += [(f"network.{len(hidden)}.{p}", v) for p, v in linear_params(rng, d, latent)]
    return collections.OrderedDict(sd)


def decoder_state(rng, n_genes, hidden, latent):
    sd, d = [], latent
    for i, h in enumerate(hidden):
        sd += block(rng, f"network.{i}", d, h, with_dropout=i > 0)
        d = h
    sd += [(f"network.{len(hidden)}.{p}", v) for p, v in linear_params(rng, d, n_genes)]
    return collections.OrderedDict(sd)


# --------------------------------------------------------------------------------------------
# torch modules
# --------------------------------------------------------------------------------------------

def torch_modules(torch, n_genes, enc_hidden, dec_hidden, latent, dropout, input_dropout):
    nn = torch.nn
    F = torch.nn.functional

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.ModuleList()
            d = n_genes
            for i, h in enumerate(enc_hidden):
                p = input_dropout if i == 0 else dropout
                self.network.append(nn.Sequential(nn.Dropout(p=p), nn.Linear(d, h), nn.BatchNorm1d(h), nn.PReLU()))
                d = h
            self.network.append(nn.Linear(d, latent))

        def forward(self, x):
            for layer in self.network:
                x = layer(x)
            return F.normalize(x, p=2, dim=1)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = nn.ModuleList()
            d = latent
            for i, h in enumerate(dec_hidden):
                layers = [nn.Linear(d, h), nn.BatchNorm1d(h), nn.PReLU()]
                if i > 0:
                    layers.insert(0, nn.Dropout(p=dropout))
                self.network.append(nn.Sequential(*layers))
                d = h
            self.network.append(nn.Linear(d, n_genes))

        def forward(self, x):
            for layer in self.network:
                x = layer(x)
            return x

    return Encoder(), Decoder()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def load_cells(h5ad, n_genes, n_cells, rng):
    import anndata
    import scipy.sparse as sp

    a = anndata.read_h5ad(h5ad)
    X = a.X.tocsr() if sp.issparse(a.X) else sp.csr_matrix(a.X)
    X = X.astype(np.float64)
    # Genes detected in the most cells (so inputs are not mostly zero), in a shuffled order
    # so that the gene order file, not the .h5ad's order, decides the layout.
    detected = np.asarray((X > 0).sum(axis=0)).ravel()
    genes = np.sort(np.argsort(-detected, kind="stable")[:n_genes])
    genes = rng.permutation(genes)
    cells = np.sort(rng.choice(X.shape[0], size=n_cells, replace=False))
    rows = X[cells]
    totals = np.asarray(rows.sum(axis=1)).ravel()
    dense = rows.toarray() / totals[:, None] * 1e4  # normalize_total(target_sum=1e4), all genes
    x = np.log1p(dense)[:, genes].astype(np.float32)
    return [str(g) for g in a.var_names[genes]], [str(c) for c in a.obs_names[cells]], x


# --------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--h5ad", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--genes", type=int, default=300)
    ap.add_argument("--hidden", default="64,32")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--input-dropout", type=float, default=0.2)
    args = ap.parse_args()
    hidden = [int(h) for h in args.hidden.split(",")]
    rng = np.random.default_rng(args.seed)

    try:
        import torch
    except Exception as e:  # ImportError, or OSError for missing shared libraries
        sys.exit(f"make_scimilarity_ckpt.py: `import torch` fails ({e}); run scripts/setup.sh")

    genes, cells, x = load_cells(args.h5ad, args.genes, args.cells, rng)
    enc_sd = encoder_state(rng, len(genes), hidden, args.latent)
    dec_sd = decoder_state(rng, len(genes), list(reversed(hidden)), args.latent)

    out = args.out
    dirs = {d: os.path.join(out, d) for d in ("model", "legacy", "extra_key", "bad_shape")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    extra_sd = collections.OrderedDict(enc_sd)
    extra_sd["network.0.4.weight"] = np.ones(3, dtype=np.float32)
    bad_sd = collections.OrderedDict(enc_sd)
    bad_sd["network.1.2.running_var"] = np.ones(hidden[1] + 1, dtype=np.float32)

    enc, dec = torch_modules(torch, len(genes), hidden, list(reversed(hidden)), args.latent, args.dropout,
                             args.input_dropout)
    # strict=True: the generated key names must be exactly the modules' (SCimilarity's) keys.
    enc.load_state_dict({k: torch.from_numpy(v) for k, v in enc_sd.items()}, strict=True)
    dec.load_state_dict({k: torch.from_numpy(v) for k, v in dec_sd.items()}, strict=True)
    enc.eval()
    dec.eval()
    with torch.no_grad():
        xt = torch.from_numpy(x)
        z = enc(xt)
        x_hat = dec(z)
    z, x_hat = z.numpy(), x_hat.numpy()

    def save(sd_or_module, path, legacy=False):
        sd = sd_or_module.state_dict() if hasattr(sd_or_module, "state_dict") else \
            collections.OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in sd_or_module.items())
        torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=not legacy)

    save(enc, os.path.join(dirs["model"], "encoder.ckpt"))
    save(dec, os.path.join(dirs["model"], "decoder.ckpt"))
    save(enc, os.path.join(dirs["legacy"], "encoder.ckpt"), legacy=True)
    save(dec, os.path.join(dirs["legacy"], "decoder.ckpt"), legacy=True)
    save(extra_sd, os.path.join(dirs["extra_key"], "encoder.ckpt"))
    save(bad_sd, os.path.join(dirs["bad_shape"], "encoder.ckpt"))
    backend = f"torch {torch.__version__}"

    # The folders' other files; the error-case folders reuse the good decoder.
    layer_sizes = {k: list(v.shape) for k, v in enc_sd.items()}
    hyper = {"latent_dim": args.latent, "hidden_dim": hidden, "dropout": args.dropout,
             "input_dropout": args.input_dropout}
    for name, d in dirs.items():
        if name in ("extra_key", "bad_shape"):
            with open(os.path.join(dirs["model"], "decoder.ckpt"), "rb") as src, \
                    open(os.path.join(d, "decoder.ckpt"), "wb") as dst:
                dst.write(src.read())
        with open(os.path.join(d, "layer_sizes.json"), "w") as f:
            json.dump(layer_sizes, f)
        with open(os.path.join(d, "gene_order.tsv"), "w") as f:
            f.write("".join(g + "\n" for g in genes))
        with open(os.path.join(d, "hyperparameters.json"), "w") as f:
            json.dump(hyper, f)

    ref = {
        "backend": backend,
        "hidden": hidden,
        "latent": args.latent,
        "dropout": args.dropout,
        "input_dropout": args.input_dropout,
        "genes": genes,
        "cells": cells,
        "x": [[float(v) for v in row] for row in x],
        "z": [[float(v) for v in row] for row in z],
        "x_hat": [[float(v) for v in row] for row in x_hat],
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"backend: {backend}")


if __name__ == "__main__":
    main()

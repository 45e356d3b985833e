//! The matching loop (Algorithm 1): Adam on the latent codes (or, for `dm-data`/`dc-data`, on
//! gene values), DM and/or DC losses on the frozen encoder's features, checkpoints and resume
//! through the shared training kit ([`crate::train`]).
//!
//! One step: `S = G(Z)` with its graph kept; `∂L/∂S` on a detached copy of S (the memory trick:
//! the encoder's graph over S is freed before the generator's backward); one backward of
//! `⟨S, ∂L/∂S⟩` through G gives `∂L/∂Z`; Adam updates Z. DC then trains its task head for a
//! few steps on the features of the updated set — a forward whose graph the next step reuses,
//! so each step runs the generator and the encoder once.
use super::matching;
use super::real::FeatureStore;
use super::{DistillParams, Init, Job, Plan, RunLog, StepLog, Synthetic};
use crate::error::{Context, Result};
use crate::nn::optim::AdamW;
use crate::nn::rng;
use crate::params::Checked;
use crate::train::checkpoint::{Checkpoint, CheckpointKind};
use crate::train::Progress;
use crate::Error;
use scdd_core::graph::ExpressionSpace;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Loop state besides the tensors, kept in the checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// DM's and DC's values at step 0 (NaN until known): the normalisers.
    norm: (f64, f64),
    /// The gene-space term's value at step 0.
    #[serde(default = "nan")]
    gene_norm: f64,
    /// The KIP term's value at step 0.
    #[serde(default = "nan")]
    kip_norm: f64,
    history: Vec<StepLog>,
}

fn nan() -> f64 {
    f64::NAN
}

/// One forward pass of the synthetic set (see `optimise`).
struct Forward {
    z: Tensor,
    s: Tensor,
    s_leaf: Tensor,
    feats: Tensor,
}

fn dense_tensor(m: &scdd_core::matrix::CsrMatrix, device: Device) -> Tensor {
    crate::nn::from_array(&m.to_dense(), device)
}

/// Bytes a step of this run holds at most, roughly: the synthetic cells and their gradient, the
/// generator's activations (codes), Adam's moments, DC's real batch. Used to refuse a run that
/// cannot fit before any work.
pub fn estimate_bytes(p: &DistillParams, n_classes: usize, genes: usize, latent: usize, hidden_sum: usize) -> f64 {
    let n = (n_classes * p.spc) as f64;
    let per_cell = if p.method.produces_codes() {
        // S, S leaf, ∂L/∂S, decoder/denoiser activations kept for the backward, Z + Adam state
        // (+ the gene-space targets and their accumulator)
        6.0 * genes as f64 + 3.0 * hidden_sum as f64 + 6.0 * latent as f64
    } else {
        // the cells are the variable: value, two moments, scratch, gradient, S leaf
        7.0 * genes as f64 + 2.0 * hidden_sum as f64
    };
    let real = if p.method.uses_dc() { (n_classes * p.real_batch.max(1) * latent) as f64 * 2.0 } else { 0.0 };
    // KIP's real sample, and its products with the cells' (the graph keeps the centred copy).
    let kip = if p.method.produces_codes() && p.method.optimises() && p.kip_weight > 0.0 {
        (n_classes * kip_per_class(p.real_batch, n_classes, genes) * genes) as f64 * 2.0
    } else {
        0.0
    };
    4.0 * (n * per_cell + real + kip)
}

/// A fresh linear task head, PyTorch's default init `U(−1/√d, 1/√d)`, seeded by (seed, step).
fn fresh_head(n_classes: usize, dim: usize, seed: u64, step: usize, device: Device) -> (Tensor, Tensor) {
    let mut r = rng::stream(seed, "distill/head", step as u64);
    let bound = 1.0 / (dim as f32).sqrt();
    let w = rng::uniforms(&mut r, n_classes * dim, -bound, bound);
    let b = rng::uniforms(&mut r, n_classes, -bound, bound);
    (
        Tensor::from_slice(&w).reshape([n_classes as i64, dim as i64]).to_device(device),
        Tensor::from_slice(&b).to_device(device),
    )
}

/// The gene-space target of every synthetic cell: the mean log-normalised cell of the real
/// cluster it stands for, projected onto valid cells like the decoded ones (`slot_of_syn[i]` indexes the clusters, class by class in slice
/// order). One streaming pass over the training cells.
fn gene_targets(
    job: &Job,
    store: &FeatureStore,
    slices: &[matching::ClassSlice],
    clusters: &[(Vec<f32>, Vec<usize>, usize)],
    slot_of_syn: &[usize],
    space: &ExpressionSpace,
    device: Device,
) -> Result<Tensor> {
    let genes = job.source.n_genes();
    let n_slots: usize = slices.iter().map(|s| s.len as usize).sum();
    // Real row → cluster slot.
    let mut slot_of_row = vec![u32::MAX; job.source.reader.n_rows()];
    for (sl, (_, assign, _)) in slices.iter().zip(clusters) {
        for (p, &row) in store.class_rows[sl.class as usize].iter().enumerate() {
            if let Some(&a) = assign.get(p) {
                slot_of_row[row] = (sl.start as usize + a) as u32;
            }
        }
    }
    let mut sums = vec![0f32; n_slots * genes];
    let mut counts = vec![0usize; n_slots];
    let n = slot_of_row.len();
    let mut start = 0;
    while start < n {
        let end = (start + super::real::CHUNK_ROWS).min(n);
        if slot_of_row[start..end].iter().any(|&s| s != u32::MAX) {
            let x = job.source.range(start..end)?;
            for k in 0..x.n_rows() {
                let slot = slot_of_row[start + k];
                if slot == u32::MAX {
                    continue;
                }
                counts[slot as usize] += 1;
                let (cols, vals) = x.row(k);
                let row = &mut sums[slot as usize * genes..(slot as usize + 1) * genes];
                for (&j, &v) in cols.iter().zip(vals) {
                    row[j as usize] += v;
                }
            }
        }
        start = end;
    }
    for (slot, c) in counts.iter().enumerate() {
        if *c > 0 {
            sums[slot * genes..(slot + 1) * genes].iter_mut().for_each(|v| *v /= *c as f32);
        }
    }
    // Targets are valid cells too: the decoded cells are projected onto them, so an unprojected
    // mean (its Σ expm1 is below the target by Jensen) would be out of reach.
    let mut means = ndarray::Array2::from_shape_vec((n_slots, genes), sums)?;
    space.project(&mut means);
    let sums = means.into_raw_vec_and_offset().0;
    let per_syn: Vec<f32> = slot_of_syn.iter().flat_map(|&s| sums[s * genes..(s + 1) * genes].iter().copied()).collect();
    Ok(Tensor::from_slice(&per_syn).reshape([slot_of_syn.len() as i64, genes as i64]).to_device(device))
}

/// The most values (cells × genes) of the KIP term's real sample: 128 MiB of f32.
const KIP_MAX_VALUES: usize = 1 << 25;

/// Real cells per class in the KIP term's sample: `real_batch`, fewer when the sample of all
/// classes would hold more than [`KIP_MAX_VALUES`] values (at least one).
fn kip_per_class(real_batch: usize, n_classes: usize, genes: usize) -> usize {
    real_batch.min(KIP_MAX_VALUES / (n_classes * genes).max(1)).max(1)
}

/// Fewest real cells per k-means cluster of a class (so fewer clusters than SPC in a class with
/// fewer than SPC × MIN_CLUSTER cells): a cluster's mean cell is the gene-space target of the
/// synthetic cells that stand for it, and the mean of one or two sparse cells is out of the
/// decoder's reach (measured on pbmc3k at SPC 10, whose two smallest classes have 7 and 15
/// training cells).
const MIN_CLUSTER: usize = 10;

/// k-means clusters of a class with `n_cells` training cells and `spc` synthetic cells.
fn n_clusters(n_cells: usize, spc: usize) -> usize {
    (n_cells / MIN_CLUSTER).clamp(1, spc.max(1))
}

/// Runs `none`, `dm`, `dc`, `dm+dc`, `dm-data` and `dc-data`.
pub fn run(cfg: &Checked<DistillParams>, job: &Job, plan: Plan, mut log: RunLog) -> Result<(Synthetic, RunLog)> {
    let model = job.model.context("this method needs the generator bundle's encoder")?;
    let device = model.device;
    let n_classes = job.classes.len();
    let ctl = &job.ctl;
    let (latent, labels, slices) = (job.latent_dim as i64, plan.labels, plan.slices);

    // Real side: features of every training cell (for optimising methods and k-means starts).
    let t0 = Instant::now();
    let codes = cfg.method.produces_codes();
    let kmeans = codes && cfg.init == Init::Kmeans;
    let store = if cfg.method.optimises() || kmeans {
        std::fs::create_dir_all(&job.work_dir).with_context(|| format!("{}: cannot create directory", job.work_dir.display()))?;
        let path = job.work_dir.join(format!("features-{}.f32", &job.generator_id[..16.min(job.generator_id.len())]));
        let n_rows = job.source.reader.n_rows() as u64;
        let progress = Progress::new("features", n_rows, 0, ctl.progress, "cells");
        let mut done = 0;
        let s = FeatureStore::build(
            job.source,
            job.class_of,
            n_classes,
            job.latent_dim,
            &path,
            |x| tch::no_grad(|| Ok(crate::nn::to_vec_f32(&model.encode(&dense_tensor(x, device), false)?))),
            |k| {
                done += k;
                progress.tick(done, done, f64::NAN)
            },
        )?;
        progress.finish();
        Some(s)
    } else {
        None
    };
    log.feature_pass_s = t0.elapsed().as_secs_f64();

    // The starting point: SPC real cells per class, encoded and noised to t (codes), or as they
    // are (gene values). The noise comes from the stream (seed, "distill/init-noise").
    let x0 = dense_tensor(&job.source.rows(&plan.init_rows)?, device);
    let classes_t = Tensor::from_slice(&labels.iter().map(|&l| l as i64).collect::<Vec<_>>()).to_device(device);
    let t = Tensor::full([labels.len() as i64], cfg.timestep as i64, (Kind::Int64, device));
    // Per class, k-means of the real features into SPC clusters: the k-means start and the
    // gene-space targets (the clusters' mean cells).
    let gene_matching = codes && cfg.method.optimises() && cfg.gene_weight > 0.0;
    let clusters = match store.as_ref().filter(|_| kmeans || gene_matching) {
        Some(store) => {
            let mut v = Vec::with_capacity(slices.len());
            for sl in &slices {
                let rows = &store.class_rows[sl.class as usize];
                let f = store.read(rows)?;
                // A cluster's mean cell is a smooth target only when it averages enough cells:
                // at most one cluster per MIN_CLUSTER cells; the class's SPC synthetic cells
                // share the clusters in turn.
                let k = n_clusters(rows.len(), sl.len as usize);
                let (centroids, assign) = super::kmeans::kmeans(&f, job.latent_dim, k, cfg.seed, sl.class as u64);
                let d = job.latent_dim;
                let cycled: Vec<f32> = (0..sl.len as usize).flat_map(|j| centroids[(j % k) * d..(j % k + 1) * d].iter().copied()).collect();
                v.push((cycled, assign, k));
            }
            Some(v)
        }
        None => None,
    };
    let init = if codes {
        let z0 = match clusters.as_ref().filter(|_| kmeans) {
            Some(c) => {
                let z: Vec<f32> = c.iter().flat_map(|(centroids, _, _)| centroids.iter().copied()).collect();
                Tensor::from_slice(&z).reshape([labels.len() as i64, latent]).to_device(device)
            }
            None => tch::no_grad(|| model.encode(&x0, false))?,
        };
        let ab = job.alpha_bar;
        let eps = rng::normals(&mut rng::stream(cfg.seed, "distill/init-noise", 0), labels.len() * job.latent_dim);
        let eps = Tensor::from_slice(&eps).reshape([labels.len() as i64, latent]).to_device(device);
        z0 * ab.sqrt() + eps * (1.0 - ab).sqrt()
    } else {
        x0
    };
    let targets = match (clusters.as_ref(), store.as_ref()) {
        (Some(c), Some(store)) if gene_matching => {
            // Which cluster each synthetic cell stands for: its own with the k-means start;
            // with random real cells, the cluster of the cell it started from.
            let mut slot_of_syn = Vec::with_capacity(labels.len());
            for (sl, (_, assign, n_clusters)) in slices.iter().zip(c) {
                for j in 0..sl.len as usize {
                    let k = if kmeans {
                        j % n_clusters
                    } else {
                        let row = plan.init_rows[sl.start as usize + j];
                        let pos = store.class_rows[sl.class as usize].binary_search(&row).ok();
                        pos.map_or(j, |p| assign.get(p).copied().unwrap_or(j))
                    };
                    slot_of_syn.push(sl.start as usize + k.min(n_clusters - 1));
                }
            }
            Some(gene_targets(job, store, &slices, c, &slot_of_syn, &model.spec.space, device)?)
        }
        _ => None,
    };
    // The KIP term's real cells: a fixed sample of each class (up to `real_batch`, fewer when
    // the sample would pass KIP_MAX_VALUES), and their one-hot labels.
    let kip = match store.as_ref() {
        Some(store) if codes && cfg.method.optimises() && cfg.kip_weight > 0.0 => {
            let per_class = kip_per_class(cfg.real_batch, n_classes, job.source.n_genes());
            let mut srng = rng::stream(cfg.seed, "distill/kip-real", 0);
            let (mut pick, mut ys) = (Vec::new(), Vec::new());
            for (c, rows) in store.class_rows.iter().enumerate() {
                let mut chosen: Vec<usize> = rows.choose_multiple(&mut srng, per_class.min(rows.len())).copied().collect();
                chosen.sort_unstable();
                ys.extend(std::iter::repeat_n(c as i64, chosen.len()));
                pick.extend(chosen);
            }
            let x = dense_tensor(&job.source.rows(&pick)?, device);
            let y = Tensor::from_slice(&ys).to_device(device).one_hot(n_classes as i64).to_kind(Kind::Float);
            Some((x, y))
        }
        _ => None,
    };
    let var = init.detach().copy();

    // The feature store is scratch space: removed whatever the loop's outcome.
    let result = match store.as_ref().filter(|_| cfg.method.optimises()) {
        Some(store) => optimise(cfg, job, model, store, &var, &classes_t, &t, &slices, targets.as_ref(), kip.as_ref(), &mut log),
        None => Ok(()),
    };
    if let Some(s) = store {
        s.remove();
    }
    let _ = std::fs::remove_dir(&job.work_dir); // only if empty
    result?;
    if let Some(c) = &ctl.checkpoint {
        let _ = std::fs::remove_file(c);
    }
    let dim = var.size()[1] as usize;
    let data = crate::nn::to_vec_f32(&var);
    let out = if codes { Synthetic::Codes { z: data, dim, labels } } else { Synthetic::Cells { x: data, genes: dim, labels } };
    Ok((out, log))
}

#[allow(clippy::too_many_arguments)]
fn optimise(
    cfg: &DistillParams,
    job: &Job,
    model: &crate::nn::TchModel,
    store: &FeatureStore,
    var: &Tensor,
    classes_t: &Tensor,
    t: &Tensor,
    slices: &[matching::ClassSlice],
    gene_targets: Option<&Tensor>,
    kip: Option<&(Tensor, Tensor)>,
    log: &mut RunLog,
) -> Result<()> {
    let device = model.device;
    let ctl = &job.ctl;
    let n_classes = job.classes.len();
    let latent = job.latent_dim as i64;
    // The synthetic cells' one-hot labels (the KIP term's regression targets).
    let ys_onehot = classes_t.one_hot(n_classes as i64).to_kind(Kind::Float);
    let codes = cfg.method.produces_codes();
    // Features are divided by their mean norm over the real cells (see FeatureStore).
    let fscale = store.mean_norm;
    let real_means =
        Tensor::from_slice(&store.class_means.concat()).reshape([n_classes as i64, latent]).to_device(device) / fscale;
    let rms = f64::try_from(var.square().mean(Kind::Float).sqrt())?;
    let mut opt = AdamW::new(vec![("var".into(), var.shallow_clone())], cfg.lr * rms.max(1e-8), 0.0);
    let config_json = serde_json::to_string(&cfg.relevant())?;
    let mut st = State { norm: (f64::NAN, f64::NAN), gene_norm: f64::NAN, kip_norm: f64::NAN, history: vec![] };
    let mut head = (Tensor::zeros([0], (Kind::Float, device)), Tensor::zeros([0], (Kind::Float, device)));
    let mut start = 0usize;
    if ctl.resume {
        let path = ctl.checkpoint.as_ref().context("--resume needs a checkpoint path")?;
        let ck = Checkpoint::load(CheckpointKind::Distill, path)?;
        ck.check(path, &config_json, &job.fingerprint)?;
        tch::no_grad(|| -> Result<()> {
            var.shallow_clone().copy_(&ck.get("var", device)?);
            Ok(())
        })?;
        opt.load_state(&ck.all(device)?, ck.step)?;
        if ck.tensors.contains_key("head.weight") {
            head = (ck.get("head.weight", device)?, ck.get("head.bias", device)?);
        }
        st = serde_json::from_str(&ck.state).context("checkpoint state")?;
        start = ck.step as usize;
        log.resumed_from = Some(start);
    }
    let save = |done: usize, st: &State, opt: &AdamW, head: &(Tensor, Tensor)| -> Result<()> {
        let Some(path) = &ctl.checkpoint else { return Ok(()) };
        let mut ck = Checkpoint::new(config_json.clone(), job.fingerprint.clone(), done as u64, serde_json::to_string(st)?);
        ck.put("var", var)?;
        for (name, t) in opt.state() {
            ck.put(name, t)?;
        }
        if head.0.numel() > 0 {
            ck.put("head.weight", &head.0)?;
            ck.put("head.bias", &head.1)?;
        }
        ck.save(CheckpointKind::Distill, path)
    };

    // One forward of the current codes: Z (a copy: the optimiser updates the variable in place
    // while the graph may still be waiting for its backward), S = G(Z), the detached S and its
    // features.
    let forward = |var: &Tensor| -> Result<Forward> {
        let z = var.detach().copy().set_requires_grad(codes);
        let s = if codes { model.generate_for_matching(&z, t, classes_t)? } else { z.shallow_clone() };
        let s_leaf = s.detach().set_requires_grad(true);
        let feats = model.encode(&s_leaf, false)? / fscale;
        Ok(Forward { z, s, s_leaf, feats })
    };
    let mut next: Option<Forward> = None;
    let progress = Progress::new(cfg.method.name(), cfg.steps as u64, start as u64, ctl.progress, "steps");
    let t_opt = Instant::now();
    for step in start..cfg.steps {
        if cfg.method.uses_dc() && (step % cfg.head_reset == 0 || head.0.numel() == 0) {
            head = fresh_head(n_classes, job.latent_dim, cfg.seed, step, device);
        }
        // S = G(Z) with its graph kept; ∂L/∂S on a detached S (memory trick, §III-C-4). The
        // forward of the previous step's head training is this step's forward: reused.
        let Forward { z, s, s_leaf, feats } = match next.take() {
            Some(f) => f,
            None => forward(var)?,
        };
        let mut loss = Tensor::zeros([], (Kind::Float, device));
        let (mut dm_v, mut dc_v) = (0.0, 0.0);
        if cfg.method.uses_dm() {
            let dm = matching::dm_loss(&feats, slices, &real_means);
            dm_v = f64::try_from(&dm)?;
            if st.norm.0.is_nan() {
                st.norm.0 = dm_v.max(1e-12);
            }
            loss += dm / st.norm.0;
        }
        if cfg.method.uses_dc() {
            let mut srng = rng::stream(cfg.seed, "distill/dc-real", step as u64);
            let mut real = Vec::with_capacity(slices.len());
            for sl in slices {
                let rows = &store.class_rows[sl.class as usize];
                let k = cfg.real_batch.min(rows.len());
                let pick: Vec<usize> = rows.choose_multiple(&mut srng, k).copied().collect();
                let f = store.read(&pick)?;
                real.push(Tensor::from_slice(&f).reshape([k as i64, latent]).to_device(device) / fscale);
            }
            let dc = matching::dc_loss(&head.0, &head.1, &feats, slices, &real);
            dc_v = f64::try_from(&dc)?;
            if st.norm.1.is_nan() {
                st.norm.1 = dc_v.max(1e-12);
            }
            loss += dc / st.norm.1;
        }
        let mut gene_v = 0.0;
        if let Some(targets) = gene_targets {
            let gl = matching::gene_loss(&s_leaf, targets);
            gene_v = f64::try_from(&gl)?;
            if st.gene_norm.is_nan() {
                st.gene_norm = gene_v.max(1e-12);
            }
            loss += gl * (cfg.gene_weight / st.gene_norm);
        }
        let mut kip_v = 0.0;
        if let Some((x, yx)) = kip {
            let l = matching::kip_loss(x, yx, &s_leaf, &ys_onehot, cfg.kip_ridge);
            kip_v = f64::try_from(&l)?;
            if st.kip_norm.is_nan() {
                st.kip_norm = kip_v.max(1e-12);
            }
            loss += l * (cfg.kip_weight / st.kip_norm);
        }
        let total = f64::try_from(&loss)?;
        if !total.is_finite() {
            return Err(Error::NonFinite { what: format!("distill {}", cfg.method), step: step as u64, value: total, flag: "--lr".into() });
        }
        let g_s = Tensor::run_backward(&[&loss], &[&s_leaf], false, false).pop().expect("one input");
        let g = if codes {
            Tensor::run_backward(&[&(&s * &g_s).sum(Kind::Float)], &[&z], false, false).pop().expect("one input")
        } else {
            g_s
        };
        drop((s, s_leaf, feats, z));
        opt.step_with(&[&g]);
        if !codes {
            tch::no_grad(|| {
                let _ = var.shallow_clone().clamp_min_(0.0);
            });
        }
        if cfg.method.uses_dc() && cfg.head_steps > 0 && step + 1 < cfg.steps {
            // The head trains on the updated set's features; their forward, graph kept, is the
            // next step's (same values as a separate pass: one forward per step instead of two).
            let f = forward(var)?;
            let detached = f.feats.detach();
            for _ in 0..cfg.head_steps {
                matching::train_head_step(&mut head.0, &mut head.1, &detached, classes_t, cfg.head_lr);
            }
            next = Some(f);
        }
        st.history.push(StepLog { step, loss: total, dm: dm_v, dc: dc_v, gene: gene_v, kip: kip_v });
        let done = step + 1;
        progress.tick(done as u64, (done - start) as u64, total);
        let stop = ctl.stops_at(done as u64, cfg.steps as u64);
        if stop || (ctl.checkpoint_every > 0 && (done as u64).is_multiple_of(ctl.checkpoint_every) && done < cfg.steps) {
            save(done, &st, &opt, &head)?;
        }
        if stop {
            progress.finish();
            return Err(ctl.interrupted(done as u64));
        }
    }
    progress.finish();
    let done = cfg.steps.saturating_sub(start);
    log.optimise_s = t_opt.elapsed().as_secs_f64();
    log.steps_per_s = if log.optimise_s > 0.0 { done as f64 / log.optimise_s } else { 0.0 };
    log.history = st.history;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distill::real::CellSource;
    use crate::distill::Method;
    use crate::io::h5ad::{write_h5ad, ReadOptions};
    use crate::params::Check;
    use crate::train::TrainControl;
    use scdd_core::dataset::Dataset;
    use scdd_core::graph::{Activation, DenoiserSpec, ExpressionSpace, GraphSpec, Layer, NoiseSchedule, Stack};
    use scdd_core::matrix::CsrMatrix;
    use scdd_core::obs::{Column, ObsTable};

    /// 40 cells × 24 genes of counts, two classes with different expressed genes, and a small
    /// random model for them.
    fn fixture(dir: &std::path::Path) -> (CellSource, Vec<Option<u32>>, crate::nn::TchModel) {
        let (n, g) = (40usize, 24usize);
        let dense: Vec<f32> =
            (0..n * g).map(|k| if (k / g) % 2 == (k % g) % 2 { 5.0 + (k % 7) as f32 } else { (k % 3) as f32 }).collect();
        let x = CsrMatrix::from_dense(n, g, &dense, "x").unwrap();
        let labels: Vec<&str> = (0..n).map(|i| if i % 2 == 0 { "a" } else { "b" }).collect();
        let mut obs = ObsTable { index: (0..n).map(|i| format!("c{i}")).collect(), columns: vec![] };
        obs.set("cell_type", Column::categorical_from_labels(&labels)).unwrap();
        let genes: Vec<String> = (0..g).map(|j| format!("G{j}")).collect();
        let path = dir.join("cells.h5ad");
        write_h5ad(&path, &Dataset::new("t", x, genes.clone(), obs).unwrap(), &Default::default()).unwrap();
        let spec = GraphSpec {
            n_genes: g,
            latent_dim: 6,
            space: ExpressionSpace::default(),
            encoder: Some(Stack::mlp("encoder", g, &[12], 6, 0.0, 0.0, vec![Layer::L2Normalize { eps: 1e-12 }])),
            decoder: Stack::mlp("decoder", 6, &[12], g, 0.0, 0.0, vec![Layer::Act(Activation::Softplus)]),
            denoiser: Some(DenoiserSpec { latent_dim: 6, hidden: vec![12, 6], emb_dim: 8, n_classes: 2, norm_eps: 1e-5 }),
            schedule: NoiseSchedule::default(),
            task_head: None,
        };
        let mut model = crate::nn::TchModel::init(spec.clone(), 2, tch::Device::Cpu).unwrap();
        model.freeze();
        let source = CellSource::open(&path, &ReadOptions::default(), &genes, &spec.space).unwrap();
        let class_of = (0..n).map(|i| Some((i % 2) as u32)).collect();
        (source, class_of, model)
    }

    fn run_once(p: DistillParams, dir: &std::path::Path) -> Result<(Synthetic, RunLog)> {
        let (source, class_of, model) = fixture(dir);
        let classes = vec!["a".to_string(), "b".to_string()];
        let job = Job {
            source: &source,
            class_of: &class_of,
            classes: &classes,
            latent_dim: 6,
            model: Some(&model),
            generator_id: "test".into(),
            alpha_bar: NoiseSchedule::default().alpha_bar(p.timestep),
            work_dir: dir.join("work"),
            ctl: TrainControl::quiet(tch::Device::Cpu),
            fingerprint: Default::default(),
        };
        super::super::distill(&p.check()?, &job)
    }

    fn codes(s: &Synthetic) -> Vec<f32> {
        match s {
            Synthetic::Codes { z, .. } => z.clone(),
            Synthetic::Cells { x, .. } => x.clone(),
        }
    }

    #[test]
    fn a_step_lowers_the_loss_repeats_with_the_seed_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = DistillParams { method: Method::DmDc, spc: 2, steps: 25, lr: 0.05, real_batch: 8, kip_weight: 0.0, ..Default::default() };
        let (syn, log) = run_once(p.clone(), dir.path()).unwrap();
        assert_eq!(log.history.len(), 25);
        let (first, last) = (&log.history[0], log.history.last().unwrap());
        assert!(last.dm < first.dm, "DM {} → {}", first.dm, last.dm);
        assert!(first.loss.is_finite() && first.dc > 0.0);
        assert!(matches!(&syn, Synthetic::Codes { dim: 6, labels, .. } if labels == &vec![0, 0, 1, 1]));
        assert!(!dir.path().join("work").exists(), "the feature store is scratch space");
        let (again, _) = run_once(p.clone(), dir.path()).unwrap();
        assert_eq!(codes(&syn), codes(&again), "same seed, same codes");
        let (other, _) = run_once(DistillParams { seed: 1, ..p.clone() }, dir.path()).unwrap();
        assert_ne!(codes(&syn), codes(&other));
        // `none` is the optimiser's starting point: the same draw as step 0 of the run above
        let (start, log) = run_once(DistillParams { method: Method::None, ..p }, dir.path()).unwrap();
        assert!(log.history.is_empty());
        assert_eq!(codes(&start).len(), codes(&syn).len());
    }

    #[test]
    fn the_kip_term_falls_and_is_skipped_when_off() {
        let dir = tempfile::tempdir().unwrap();
        let p = DistillParams { method: Method::Dm, spc: 1, steps: 30, lr: 0.05, gene_weight: 0.0, kip_weight: 1000.0, ..Default::default() };
        let (_, log) = run_once(p.clone(), dir.path()).unwrap();
        let (first, last) = (&log.history[0], log.history.last().unwrap());
        assert!(first.kip > 0.0 && last.kip < first.kip, "KIP term {} → {}", first.kip, last.kip);
        let (_, log) = run_once(DistillParams { kip_weight: 0.0, ..p }, dir.path()).unwrap();
        assert!(log.history.iter().all(|h| h.kip == 0.0));
    }

    #[test]
    fn gene_matching_and_kmeans_starts() {
        let dir = tempfile::tempdir().unwrap();
        let p = DistillParams { method: Method::Dm, spc: 2, steps: 30, lr: 0.05, gene_weight: 1.0, kip_weight: 0.0, ..Default::default() };
        let (_, log) = run_once(p.clone(), dir.path()).unwrap();
        let (first, last) = (&log.history[0], log.history.last().unwrap());
        assert!(first.gene > 0.0 && last.gene < first.gene, "gene term {} → {}", first.gene, last.gene);
        // Off: the term is not computed.
        let (_, log) = run_once(DistillParams { gene_weight: 0.0, ..p.clone() }, dir.path()).unwrap();
        assert!(log.history.iter().all(|h| h.gene == 0.0));
        // k-means starts: `none` writes them; a second run repeats them; they differ from the
        // random-cell start.
        let km = DistillParams { method: Method::None, init: Init::Kmeans, ..p };
        let (a, _) = run_once(km.clone(), dir.path()).unwrap();
        let (b, _) = run_once(km.clone(), dir.path()).unwrap();
        assert_eq!(codes(&a), codes(&b));
        let (r, _) = run_once(DistillParams { init: Init::Random, ..km }, dir.path()).unwrap();
        assert_ne!(codes(&a), codes(&r));
        assert!(!dir.path().join("work").exists(), "the feature store is scratch space");
    }

    #[test]
    fn small_classes_get_fewer_clusters_than_spc() {
        assert_eq!(n_clusters(5000, 10), 10);
        assert_eq!(n_clusters(100, 10), 10);
        assert_eq!(n_clusters(99, 10), 9);
        assert_eq!(n_clusters(15, 10), 1);
        assert_eq!(n_clusters(3, 1), 1);
        assert_eq!(n_clusters(0, 10), 1);
    }

    #[test]
    fn a_diverging_step_stops_the_run_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = DistillParams { method: Method::DmData, spc: 1, steps: 20, lr: 1e38, ..Default::default() };
        match run_once(p, dir.path()) {
            Err(e) => assert!(matches!(e.root(), Error::NonFinite { .. }) && e.to_string().contains("lower --lr"), "{e}"),
            Ok((_, log)) => panic!("a step of 1e38 × RMS must overflow; final loss {:?}", log.history.last().map(|h| h.loss)),
        }
        assert!(!dir.path().join("work").exists());
    }
}

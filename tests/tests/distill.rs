//! Distillation on real cells (pancreas E15.5) with a small, randomly initialised generator:
//! the mechanics — loss goes down, resume equals an uninterrupted run, seeds reproduce, code
//! files refuse the wrong generator, baselines are what they claim.
mod common;

use scdd::distill::output::DistillIo;
use scdd::distill::{DistillParams, Method, RunLog};
use scdd::params::Check;
use scdd::distill::real::CellSource;
use scdd::io::h5ad::{read_h5ad, MatrixSource, ReadOptions};
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use scdd_core::graph::ExpressionSpace;
use std::path::{Path, PathBuf};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

fn small_bundle(seed: u64) -> GeneratorBundle {
    common::random_generator(&read_h5ad(Path::new(DATA), &ReadOptions::default()).unwrap(), 16, 64, seed)
}

/// A distillation as the library takes it: parameters and files.
struct Args {
    p: DistillParams,
    io: DistillIo,
}

fn args(gen: &Path, out: PathBuf, method: Method, spc: usize, steps: usize) -> Args {
    let p = DistillParams { method, spc, steps, lr: 0.01, timestep: 50, real_batch: 64, seed: 3, ..Default::default() };
    let io = DistillIo { device: "cpu".parse().unwrap(), checkpoint_every: 0, ..DistillIo::new(PathBuf::from(DATA), gen.to_path_buf(), out) };
    Args { p, io }
}

fn distill_to_file(a: &Args, bundle: &GeneratorBundle) -> scdd::Result<RunLog> {
    scdd::distill::output::distill_to_file(&a.p.clone().check()?, &a.io, bundle)
}

fn write_bundle(dir: &Path, seed: u64) -> (PathBuf, GeneratorBundle) {
    let b = small_bundle(seed);
    let p = dir.join(format!("gen{seed}.scddg"));
    std::fs::write(&p, b.to_bytes()).unwrap();
    (p, b)
}

fn codes(p: &Path) -> LatentCodes {
    LatentCodes::from_bytes(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn dm_dc_reduce_their_loss_and_write_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    for method in [Method::Dm, Method::DmDc] {
        let out = dir.path().join(format!("{}.scdd", method.name().replace('+', "_")));
        let mut a = args(&gen, out.clone(), method, 2, 40);
        a.p.lr = 0.05;
        // The feature-space terms alone here (the gene-space and KIP terms have their own tests).
        a.p.gene_weight = 0.0;
        a.p.kip_weight = 0.0;
        let log = distill_to_file(&a, &bundle).unwrap();
        let first = &log.history[0];
        let last = log.history.last().unwrap();
        // An untrained generator limits how far the codes can go; the loss must still fall.
        assert!(last.loss < 0.95 * first.loss, "{method}: loss {} → {}", first.loss, last.loss);
        assert_eq!((last.gene, last.kip), (0.0, 0.0));
        let c = codes(&out);
        assert_eq!(c.n_codes(), 2 * bundle.classes.len());
        assert_eq!(c.latent_dim(), 16);
        assert_eq!(c.generator_id, bundle.generator_id());
        assert_eq!(c.provenance.method, method.name());
        // kilobytes: header + C × SPC × latent × 4 bytes
        let size = std::fs::metadata(&out).unwrap().len() as usize;
        assert!(size < 2 * 16 * 4 * 8 + 2048, "{size} bytes");
    }
}

#[test]
fn resume_equals_uninterrupted_and_seed_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 2);
    let straight = dir.path().join("straight.scdd");
    distill_to_file(&args(&gen, straight.clone(), Method::DmDc, 1, 16), &bundle).unwrap();
    let again = dir.path().join("again.scdd");
    distill_to_file(&args(&gen, again.clone(), Method::DmDc, 1, 16), &bundle).unwrap();
    assert_eq!(codes(&straight).codes, codes(&again).codes, "same seed, same codes");

    let resumed = dir.path().join("resumed.scdd");
    let mut a = args(&gen, resumed.clone(), Method::DmDc, 1, 16);
    a.io.stop_after = Some(7);
    let e = distill_to_file(&a, &bundle).unwrap_err();
    assert!(matches!(e.root(), scdd::Error::Interrupted { step: 7, .. }), "{e}");
    assert!(!resumed.exists(), "an interrupted run writes no output");
    a.io.stop_after = None;
    a.io.resume = true;
    let log = distill_to_file(&a, &bundle).unwrap();
    assert_eq!(log.resumed_from, Some(7));
    assert_eq!(codes(&straight).codes, codes(&resumed).codes, "resumed run must end where the straight one did");

    let mut other = args(&gen, dir.path().join("other.scdd"), Method::DmDc, 1, 16);
    other.p.seed = 4;
    distill_to_file(&other, &bundle).unwrap();
    assert_ne!(codes(&straight).codes, codes(&other.io.out).codes);
}

#[test]
fn codes_refuse_another_generator() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    let (_, other) = write_bundle(dir.path(), 9);
    let out = dir.path().join("none.scdd");
    distill_to_file(&args(&gen, out.clone(), Method::None, 1, 0), &bundle).unwrap();
    let c = codes(&out);
    let e = scdd::synthetic::decode(&c, &other, &out).unwrap_err();
    assert!(matches!(e, scdd::Error::Incompatible { .. }) && e.to_string().contains("made for generator"), "{e}");
    let ok = scdd::synthetic::decode(&c, &bundle.without_encoder(), &out).unwrap();
    assert_eq!(ok.n_cells(), bundle.classes.len());
}

#[test]
fn a_recipient_scores_codes_with_gene_space_evaluators() {
    use scdd::evaluate::{input::evaluate_files, EvalParams, EvaluatorKind};
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    let out = dir.path().join("none.scdd");
    distill_to_file(&args(&gen, out.clone(), Method::None, 2, 0), &bundle).unwrap();
    let recipient = dir.path().join("recipient.scddg");
    std::fs::write(&recipient, bundle.without_encoder().to_bytes()).unwrap();
    let plan = |evaluators: Vec<EvaluatorKind>| EvalParams { repeats: 2, evaluators: evaluators.into_iter().map(Into::into).collect(), ..Default::default() }.check().unwrap();
    let data = Path::new(DATA);
    let r = evaluate_files(&out, data, &Default::default(), Some(&recipient), None, &plan(vec![EvaluatorKind::Lr, EvaluatorKind::Mlp])).unwrap();
    assert_eq!(r.results.len(), 2);
    assert_eq!(r.get("lr").unwrap().repeats, 1, "logistic regression is convex: one fit");
    assert_eq!(r.get("mlp").unwrap().repeats, 2);
    let h = r.headline().unwrap();
    assert_eq!(h.accuracy_mean, (r.results[0].accuracy_mean + r.results[1].accuracy_mean) / 2.0);
    assert_eq!(h.n_train, 2 * bundle.classes.len());
    // The paper's evaluator needs the encoder, which a recipient's bundle lacks.
    let e = evaluate_files(&out, data, &Default::default(), Some(&recipient), None, &plan(vec![EvaluatorKind::Default])).unwrap_err();
    assert!(matches!(e, scdd::Error::MissingEncoder { .. }), "{e}");
}

#[test]
fn baselines_write_cells() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    // class-mean at SPC 1 is the exact mean of each class's log-normalised cells
    let out = dir.path().join("mean.h5ad");
    distill_to_file(&args(&gen, out.clone(), Method::ClassMean, 1, 0), &bundle).unwrap();
    let syn = read_h5ad(&out, &ReadOptions::default()).unwrap();
    let mut real = read_h5ad(Path::new(DATA), &ReadOptions::default()).unwrap();
    scdd_core::preprocess::normalize_total(&mut real.x, 1e4);
    scdd_core::preprocess::log1p(&mut real.x);
    let labels = real.obs.labels("cell_type").unwrap();
    let c = 0usize;
    let rows: Vec<usize> = (0..real.n_cells()).filter(|&r| labels.ids[r] == Some(c as u32)).collect();
    let mean = real.x.dense_rows(&rows).mean_axis(ndarray::Axis(0)).unwrap();
    let syn_l = syn.obs.labels("cell_type").unwrap();
    let row = syn_l.ids.iter().position(|&i| syn_l.classes[i.unwrap() as usize] == labels.classes[c]).unwrap();
    let got = syn.x.dense_rows(&[row]);
    let diff = (&got.row(0) - &mean).mapv(f32::abs).fold(0f32, |a, &b| a.max(b));
    assert!(diff < 1e-4, "class mean differs by {diff}");

    for (method, spc) in [(Method::Random, 3), (Method::DmData, 2)] {
        let out = dir.path().join(format!("{}.h5ad", method.name()));
        let mut a = args(&gen, out.clone(), method, spc, 40);
        a.p.lr = 0.05;
        let log = distill_to_file(&a, &bundle).unwrap();
        if method == Method::DmData {
            // gene values are free: DM falls far
            let (first, last) = (&log.history[0], log.history.last().unwrap());
            assert!(last.dm < 0.5 * first.dm, "dm-data: DM {} → {}", first.dm, last.dm);
        }
        let s = read_h5ad(&out, &ReadOptions::default()).unwrap();
        assert_eq!(s.n_cells(), spc * bundle.classes.len());
        assert!(s.x.data().iter().all(|&v| v >= 0.0), "{method}: negative values");
    }
    let e = distill_to_file(&args(&gen, dir.path().join("x.scdd"), Method::Random, 1, 0), &bundle).unwrap_err();
    assert!(matches!(e.root(), scdd::Error::Output { .. }) && e.to_string().contains(".h5ad"), "{e}");
}

/// What a file holds is detected once on the whole file, so any row subset (a single cell, a
/// class of six) is prepared exactly as the same rows of the full matrix. pbmc68k_reduced's
/// raw/X is log-normalised over a 765-gene subset, so row totals vary and detection on a few
/// rows alone fails.
#[test]
fn row_subsets_prepare_like_the_whole_file() {
    let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pbmc68k_reduced_scanpy.h5ad"));
    let opts = ReadOptions::matrix(MatrixSource::Raw);
    let ds = read_h5ad(data, &opts).unwrap();
    let src = CellSource::open(data, &opts, &ds.genes, &ExpressionSpace::default()).unwrap();
    assert!(matches!(src.kind, scdd_core::preprocess::CountType::LogNormalized { .. }), "{}", src.kind);
    let full = src.range(0..ds.n_cells()).unwrap();
    let singles = (0..ds.n_cells()).map(|r| vec![r]);
    let pairs = (0..ds.n_cells() - 1).step_by(7).map(|r| vec![r + 1, r]);
    for rows in singles.chain(pairs).chain([(0..40).collect(), vec![699, 1, 350]]) {
        let sub = src.rows(&rows).unwrap_or_else(|e| panic!("rows {rows:?}: {e:#}"));
        assert_eq!(sub, full.select_rows(&rows), "rows {rows:?}");
    }
}

/// `scdd inspect` recognises code files and bundles by their magic number and says what they
/// hold; a damaged one gets the format's own error.
#[test]
fn inspect_describes_codes_and_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    let out = dir.path().join("codes.scdd");
    distill_to_file(&args(&gen, out.clone(), Method::Dm, 2, 3), &bundle).unwrap();
    let json = |p: &Path| -> serde_json::Value {
        let o = common::scdd(&["inspect", p.to_str().unwrap(), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let c = json(&out);
    assert_eq!(c["n_codes"], 2 * bundle.classes.len());
    assert_eq!(c["latent_dim"], 16);
    assert_eq!(c["spc"], 2);
    assert_eq!(c["generator_id"], bundle.generator_id());
    assert_eq!(c["provenance"]["method"], "dm");
    assert_eq!(c["classes"].as_array().unwrap().len(), bundle.classes.len());
    let b = json(&gen);
    assert_eq!(b["generator_id"], bundle.generator_id());
    assert_eq!(b["n_genes"], bundle.genes.len());
    assert_eq!(b["decoder"], format!("16 → 64 → {} (BatchNorm1d, PReLU, Softplus)", bundle.genes.len()));
    assert_eq!(b["parameters"], bundle.tensors.values().map(|t| t.numel()).sum::<usize>());

    let text = common::scdd(&["inspect", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("scdd latent codes") && text.contains(&bundle.generator_id()), "{text}");
    let bytes = std::fs::read(&out).unwrap();
    let cut = dir.path().join("cut.scdd");
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let o = common::scdd(&["inspect", cut.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("cut.scdd") && err.contains("truncated"), "{err}");
}

#[test]
fn recipient_bundle_command_writes_a_smaller_bundle_that_decodes_the_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (gen, bundle) = write_bundle(dir.path(), 1);
    let codes_path = dir.path().join("none.scdd");
    distill_to_file(&args(&gen, codes_path.clone(), Method::None, 2, 0), &bundle).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let half = dir.path().join("half.scddg");
    let o = common::scdd(&["recipient-bundle", &s(&gen), "-o", &s(&half), "--f16", "--check", &s(&codes_path), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["bytes_after"].as_u64().unwrap() * 2 < r["bytes_before"].as_u64().unwrap() + 4096, "{r}");
    assert_eq!(r["f16_of"].as_str().unwrap(), bundle.generator_id());
    let diff = r["max_abs_diff"].as_f64().unwrap();
    assert!(diff > 0.0 && diff < 0.05, "f16 weights move decoded values a little: {diff}");
    // The copy decodes the codes through the CLI as the original does.
    let (a, b) = (dir.path().join("a.h5ad"), dir.path().join("b.h5ad"));
    for (g, out) in [(&gen, &a), (&half, &b)] {
        let o = common::scdd(&["decode", &s(&codes_path), "-g", &s(g), "-o", &s(out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let (xa, xb) = (read_h5ad(&a, &ReadOptions::default()).unwrap().x.to_dense(), read_h5ad(&b, &ReadOptions::default()).unwrap().x.to_dense());
    let worst = xa.iter().zip(xb.iter()).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!((worst as f64 - diff).abs() < 1e-6, "{worst} vs {diff}");
    // Refusals before any work: over the input, a wrong extension.
    let o = common::scdd(&["recipient-bundle", &s(&gen), "-o", &s(&gen)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("would be overwritten"));
    let o = common::scdd(&["recipient-bundle", &s(&gen), "-o", &s(&dir.path().join("x.h5ad"))]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(".scddg"), "{}", String::from_utf8_lossy(&o.stderr));
}

//! Training on real data: the tch forward pass against the CPU reference, resume = an
//! uninterrupted run, seeded reproducibility, clear errors, and the train / generate CLI.
mod common;

use ndarray::Array2;
use scdd::foundation::{FoundationConfig, FoundationRun, TrainData};
use scdd::generator::{sample_latents, GenData, GeneratorConfig, GeneratorRun, Sampler};
use scdd::nn::{from_array, to_array, TchModel};
use scdd::params::Check;
use scdd::train::TrainControl;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::reference::CpuModel;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

fn data_file(name: &str) -> PathBuf {
    common::workspace_root().join("data").join(name)
}
const PBMC: &str = "pbmc3k_seurat_labels_clustifyr.h5ad";
const PANCREAS: &str = "pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad";

/// `n` cells (every k-th) of a data file, log-normalised, genes seen in >= 3 cells.
fn load(name: &str, n: usize) -> TrainData {
    let mut d = scdd::foundation::data::load_training_data(&data_file(name), &Default::default(), Some("cell_type"), 3).unwrap();
    let step = (d.x.n_rows() / n).max(1);
    let rows: Vec<usize> = (0..d.x.n_rows()).step_by(step).take(n).collect();
    d.x = d.x.select_rows(&rows);
    if let Some((_, ids, _)) = &mut d.labels {
        *ids = rows.iter().map(|&r| ids[r]).collect();
    }
    d
}

fn gen_data(d: &TrainData) -> GenData {
    let (col, ids, classes) = d.labels.clone().unwrap();
    GenData { name: d.name.clone(), x: d.x.clone(), label_column: col, labels: ids, classes }
}

fn tiny_foundation() -> FoundationConfig {
    FoundationConfig {
        hidden: vec![48],
        latent_dim: 16,
        input_dropout: 0.1,
        dropout: 0.1,
        batch_size: 32,
        max_epochs: 3,
        patience: 10,
        val_fraction: 0.1,
        ..FoundationConfig::default()
    }
}

fn tiny_generator() -> GeneratorConfig {
    GeneratorConfig {
        hidden: vec![32, 24],
        emb_dim: 16,
        beta_min: 1e-4,
        beta_max: 0.1,
        timesteps: 100,
        batch_size: 32,
        steps: 24,
        holdout: 0.1,
        ..GeneratorConfig::default()
    }
}

/// The library's trainers take checked settings.
fn train_foundation(d: &TrainData, cfg: &FoundationConfig, ctl: &TrainControl) -> scdd::Result<FoundationRun> {
    scdd::foundation::train_foundation(d, &cfg.clone().check()?, ctl)
}

fn train_generator(f: &GeneratorBundle, d: &GenData, cfg: &GeneratorConfig, ctl: &TrainControl, enc: bool) -> scdd::Result<GeneratorRun> {
    scdd::generator::train_generator(f, d, &cfg.clone().check()?, ctl, enc)
}

fn quiet() -> TrainControl {
    TrainControl::quiet(Device::Cpu)
}

fn max_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    (a - b).mapv(f32::abs).fold(0f32, |m, &v| m.max(v))
}

/// Encode, denoise, decode and generate with tch and with the CPU reference on real cells.
fn check_against_reference(bundle: &GeneratorBundle, x: &Array2<f32>, tol: f32) {
    let cpu = CpuModel::from_bundle(bundle).unwrap();
    let m = TchModel::from_bundle(bundle, Device::Cpu).unwrap();
    let xt = from_array(x, Device::Cpu);
    let z_ref = cpu.encode(x.clone()).unwrap();
    let z = tch::no_grad(|| m.encode(&xt, false).unwrap());
    let d = max_diff(&z_ref, &to_array(&z));
    assert!(d < tol, "encode differs by {d}");
    let dec = max_diff(&cpu.decode(z_ref.clone()), &to_array(&tch::no_grad(|| m.decode(&z))));
    assert!(dec < tol, "decode differs by {dec}");
    let n = x.nrows();
    let k = bundle.classes.len() as u32;
    let ts: Vec<u32> = (0..n as u32).map(|i| 1 + (i * 37) % bundle.spec.schedule.steps).collect();
    let cs: Vec<u32> = (0..n as u32).map(|i| i % k).collect();
    let t = Tensor::from_slice(&ts.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let c = Tensor::from_slice(&cs.iter().map(|&v| v as i64).collect::<Vec<_>>());
    let den = max_diff(&cpu.denoise(&z_ref, &ts, &cs).unwrap(), &to_array(&tch::no_grad(|| m.denoise(&z, &t, &c).unwrap())));
    assert!(den < tol, "denoise differs by {den}");
    let t0 = bundle.spec.schedule.steps / 4;
    let tt = Tensor::from_slice(&vec![t0 as i64; n]);
    let g = max_diff(&cpu.generate(&z_ref, t0, &cs).unwrap(), &to_array(&tch::no_grad(|| m.generate(&z, &tt, &c).unwrap())));
    assert!(g < tol, "generate differs by {g}");
}

#[test]
fn tch_matches_the_cpu_reference_on_real_data() {
    // A trained (tiny) foundation + generator on pbmc3k cells.
    let d = load(PBMC, 240);
    let f = train_foundation(&d, &tiny_foundation(), &quiet()).unwrap();
    let g = train_generator(&f.bundle, &gen_data(&d), &tiny_generator(), &quiet(), true).unwrap();
    let x = d.x.dense_rows(&(0..24).collect::<Vec<_>>());
    check_against_reference(&g.bundle, &x, 1e-4);
    // The generator runs on latents scaled to radius √L; D(E(x)) is what the foundation gave.
    assert_eq!(g.bundle.metadata["generator.latent_scale"], (16f32).sqrt().to_string());
    let (cf, cg) = (CpuModel::from_bundle(&f.bundle).unwrap(), CpuModel::from_bundle(&g.bundle).unwrap());
    let zf = cf.encode(x.clone()).unwrap();
    let zg = cg.encode(x.clone()).unwrap();
    let norms: Vec<f32> = zg.rows().into_iter().map(|r| r.dot(&r).sqrt()).collect();
    assert!(norms.iter().all(|n| (n - 4.0).abs() < 1e-4), "{norms:?}");
    let rd = max_diff(&cf.decode(zf), &cg.decode(zg));
    assert!(rd < 1e-4, "latent scaling changed the reconstruction by {rd}");

    // A randomly initialised model of the default sizes (13k genes, 1024-wide, denoiser 512).
    let mut spec = FoundationConfig::default().graph(d.x.n_cols());
    spec.denoiser = Some(scdd_core::graph::DenoiserSpec::reference(spec.latent_dim, 9));
    let tensors = scdd::nn::init_params(&spec, 5);
    let b = GeneratorBundle {
        spec,
        genes: d.genes.clone(),
        label_column: "cell_type".into(),
        classes: (0..9).map(|i| format!("c{i}")).collect(),
        tensors,
        metadata: Default::default(),
    };
    check_against_reference(&b, &d.x.dense_rows(&(0..12).collect::<Vec<_>>()), 1e-4);
}

fn strip(b: &GeneratorBundle) -> Vec<u8> {
    let mut b = b.clone();
    b.metadata.clear();
    b.to_bytes()
}

#[test]
fn resuming_reaches_the_weights_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = load(PANCREAS, 300);
    let cfg = FoundationConfig { max_epochs: 4, ..tiny_foundation() };
    let straight = train_foundation(&d, &cfg, &quiet()).unwrap();
    let ck = dir.path().join("f.ckpt");
    let mut ctl = TrainControl { checkpoint: Some(ck.clone()), checkpoint_every: 3, stop_after: Some(13), ..quiet() };
    match train_foundation(&d, &cfg, &ctl) {
        Err(e) => assert!(matches!(e.root(), scdd::Error::Interrupted { step: 13, .. }), "{e}"),
        Ok(_) => panic!("should have stopped after 13 steps"),
    }
    assert!(ck.exists());
    ctl.stop_after = None;
    ctl.resume = true;
    let resumed = train_foundation(&d, &cfg, &ctl).unwrap();
    assert_eq!(straight.bundle.tensors, resumed.bundle.tensors, "foundation weights differ after resume");
    assert_eq!(straight.report, resumed.report);

    // The generator (optimizer moments and EMA weights travel through the checkpoint).
    let gd = gen_data(&d);
    let gcfg = tiny_generator();
    let straight_g = train_generator(&straight.bundle, &gd, &gcfg, &quiet(), true).unwrap();
    let gk = dir.path().join("g.ckpt");
    let mut ctl = TrainControl { checkpoint: Some(gk.clone()), checkpoint_every: 5, stop_after: Some(11), ..quiet() };
    let e = train_generator(&straight.bundle, &gd, &gcfg, &ctl, true).err().expect("stops after 11 steps");
    assert!(matches!(e.root(), scdd::Error::Interrupted { step: 11, .. }), "{e}");
    ctl.stop_after = None;
    ctl.resume = true;
    let resumed_g = train_generator(&straight.bundle, &gd, &gcfg, &ctl, true).unwrap();
    assert_eq!(strip(&straight_g.bundle), strip(&resumed_g.bundle), "generator weights differ after resume");

    // A checkpoint of other settings is refused.
    let other = GeneratorConfig { lr: 0.5, ..gcfg };
    let e = match train_generator(&straight.bundle, &gd, &other, &ctl, true) {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a checkpoint of another configuration must be refused"),
    };
    assert!(e.contains("other settings"), "{e}");
}

#[test]
fn the_same_seed_gives_the_same_bundle_bytes() {
    let d = load(PANCREAS, 200);
    let cfg = FoundationConfig { max_epochs: 2, ..tiny_foundation() };
    let a = train_foundation(&d, &cfg, &quiet()).unwrap();
    let b = train_foundation(&d, &cfg, &quiet()).unwrap();
    assert_eq!(strip(&a.bundle), strip(&b.bundle));
    let c = train_foundation(&d, &FoundationConfig { seed: 1, ..cfg }, &quiet()).unwrap();
    assert_ne!(strip(&a.bundle), strip(&c.bundle));
    let gd = gen_data(&d);
    let g1 = train_generator(&a.bundle, &gd, &tiny_generator(), &quiet(), true).unwrap();
    let g2 = train_generator(&a.bundle, &gd, &tiny_generator(), &quiet(), true).unwrap();
    assert_eq!(strip(&g1.bundle), strip(&g2.bundle));
    assert_eq!(g1.quality, g2.quality);
    // Sampling is seeded too, for every sampler.
    let m = TchModel::from_bundle(&g1.bundle, Device::Cpu).unwrap();
    for s in [Sampler::Ddpm, Sampler::Ddim { steps: 7 }, Sampler::SingleStep { t: 30 }] {
        let x = scdd::nn::to_vec_f32(&sample_latents(&m, &[0, 1, 1], &s, 4).unwrap());
        let y = scdd::nn::to_vec_f32(&sample_latents(&m, &[0, 1, 1], &s, 4).unwrap());
        assert_eq!(x, y, "{s}");
        assert!(x.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn clear_errors() {
    let d = load(PANCREAS, 120);
    // an empty training set
    let mut empty = load(PANCREAS, 120);
    empty.x = empty.x.select_rows(&[]);
    empty.labels = None;
    let e = train_foundation(&empty, &tiny_foundation(), &quiet()).err().expect("empty set must fail").to_string();
    assert!(e.contains("empty"), "{e}");
    // a label column with one class
    let f = train_foundation(&d, &FoundationConfig { max_epochs: 1, ..tiny_foundation() }, &quiet()).unwrap();
    let mut one = gen_data(&d);
    one.labels = one.labels.iter().map(|_| Some(0)).collect();
    one.classes.truncate(1);
    let e = train_generator(&f.bundle, &one, &tiny_generator(), &quiet(), true).err().expect("one class must fail").to_string();
    assert!(e.contains("1 class") && e.contains("at least two"), "{e}");
    // a foundation without an encoder
    let e = train_generator(&f.bundle.without_encoder(), &gen_data(&d), &tiny_generator(), &quiet(), true)
        .err()
        .expect("no encoder must fail")
        .to_string();
    assert!(e.contains("no encoder"), "{e}");
    // data whose genes do not fit the bundle
    let mut other = d.genes.clone();
    other.iter_mut().for_each(|g| g.insert_str(0, "X_"));
    let ds = scdd_core::dataset::Dataset::new(
        "t",
        d.x.clone(),
        other,
        scdd_core::obs::ObsTable { index: (0..d.x.n_rows()).map(|i| i.to_string()).collect(), columns: vec![] },
    )
    .unwrap();
    let e = match scdd::io::prep::to_model_input(ds, &f.bundle.genes, &f.bundle.spec.space, "t.h5ad:X") {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("disjoint genes must be refused"),
    };
    assert!(e.contains("only 0 of the model's"), "{e}");
    // CUDA asked for but absent
    if scdd::nn::device::cuda_devices() == 0 {
        let e = scdd::nn::device::DeviceArg::Cuda(0).resolve().unwrap_err().to_string();
        assert!(e.contains("CUDA is not available"), "{e}");
    }
}

fn run_ok(args: &[&str]) -> String {
    let out = common::scdd(args);
    assert!(out.status.success(), "scdd {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_subset(src: &Path, dst: &Path, n: usize) {
    let ds = scdd::io::h5ad::read_h5ad(src, &Default::default()).unwrap();
    let step = ds.n_cells() / n;
    let rows: Vec<usize> = (0..ds.n_cells()).step_by(step).take(n).collect();
    scdd::io::h5ad::write_h5ad(dst, &ds.select_cells(&rows), &Default::default()).unwrap();
}

#[test]
fn cli_trains_generates_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).to_str().unwrap().to_string();
    write_subset(&data_file(PANCREAS), &dir.path().join("train.h5ad"), 300);
    let out = run_ok(&[
        "train-foundation", &p("train.h5ad"), "--label", "cell_type", "-o", &p("fm.scddg"), "--hidden", "48", "--latent-dim",
        "16", "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--quiet",
    ]);
    assert!(out.contains("mean per-cell Pearson"), "{out}");
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("fm.scddg.report.json")).unwrap()).unwrap();
    assert!(rep["report"]["heldout"]["pearson"].as_f64().unwrap().is_finite());
    let out = run_ok(&[
        "train-generator", &p("train.h5ad"), "--foundation", &p("fm.scddg"), "--label", "cell_type", "-o", &p("gen.scddg"),
        "--hidden", "32,24", "--emb-dim", "16", "--timesteps", "100", "--steps", "20", "--batch-size", "32", "--no-encoder",
        "--device", "cpu", "--quiet",
    ]);
    assert!(out.contains("MMD²") && out.contains("without encoder"), "{out}");
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p("gen.scddg.report.json")).unwrap()).unwrap();
    assert!(!rep["quality"]["classes"].as_array().unwrap().is_empty(), "{rep}");
    let gen = GeneratorBundle::from_bytes(&std::fs::read(p("gen.scddg")).unwrap()).unwrap();
    assert!(gen.spec.encoder.is_none() && gen.spec.denoiser.is_some());
    assert!(!Path::new(&p("gen.scddg.ckpt")).exists(), "the checkpoint is removed after a finished run");
    let class = gen.classes[1].clone();
    run_ok(&["generate", &p("gen.scddg"), "--class", &class, "-n", "7", "-o", &p("cells.h5ad"), "--device", "cpu"]);
    let cells = scdd::io::h5ad::read_h5ad(Path::new(&p("cells.h5ad")), &Default::default()).unwrap();
    assert_eq!(cells.n_cells(), 7);
    assert_eq!(cells.genes, gen.genes);
    let labels = cells.obs.labels("cell_type").unwrap();
    assert_eq!(labels.classes, vec![class.clone()]);
    // generated cells declare their expression space and load back as model input unchanged
    let back = scdd::io::prep::load_model_input(Path::new(&p("cells.h5ad")), &Default::default(), &gen.genes, &gen.spec.space).unwrap();
    assert_eq!(back.data.x, cells.x);
    run_ok(&["generate", &p("gen.scddg"), "--class", "all", "-n", "2", "--single-step", "50", "-o", &p("all.h5ad"), "--device", "cpu"]);
    assert_eq!(scdd::io::h5ad::read_h5ad(Path::new(&p("all.h5ad")), &Default::default()).unwrap().n_cells(), 2 * gen.classes.len());
    // errors: an unknown class, CUDA without a GPU, resume without a checkpoint
    let out = common::scdd(&["generate", &p("gen.scddg"), "--class", "Nope", "-n", "2", "-o", &p("x.h5ad")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a class") && err.contains(&class), "{err}");
    if scdd::nn::device::cuda_devices() == 0 {
        let out = common::scdd(&["train-foundation", &p("train.h5ad"), "-o", &p("y.scddg"), "--device", "cuda"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("CUDA is not available"), "{err}");
    }
    let out = common::scdd(&["train-foundation", &p("train.h5ad"), "-o", &p("z.scddg"), "--resume", "--device", "cpu"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no checkpoint"));
}

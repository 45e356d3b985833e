//! `scdd import-scimilarity`: a SCimilarity-format folder built by Python
//! (`tests/py/make_scimilarity_ckpt.py`, SCimilarity's module structure and key names, random
//! weights, non-trivial BatchNorm statistics) is imported, and scdd's CPU reference encoder and
//! decoder must reproduce Python's outputs on real PBMC cells to 1e-5. Broken folders must fail
//! with errors that name the file and the key.
//! The checkpoints are written by real PyTorch (`torch.save`, zip and legacy formats).
use ndarray::Array2;
use scdd::import::scimilarity;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::Layer;
use scdd_core::reference::CpuModel;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `$SCDD_PYTHON`, else `<workspace>/.venv/bin/python`; a missing interpreter fails the test.
fn python() -> PathBuf {
    let py = match std::env::var_os("SCDD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join(".venv/bin/python"),
    };
    assert!(py.exists(), "Python interpreter {} not found: run scripts/setup.sh or set SCDD_PYTHON", py.display());
    py
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    reference: serde_json::Value,
}

/// Generates the model folders and reference outputs once per test binary.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let ws = workspace_root();
        let out = Command::new(python())
            .arg(ws.join("tests/py/make_scimilarity_ckpt.py"))
            .arg("--h5ad")
            .arg(ws.join("data/pbmc3k_seurat_labels_clustifyr.h5ad"))
            .arg("--out")
            .arg(&root)
            .args(["--genes", "300", "--hidden", "64,32", "--latent", "16", "--cells", "8"])
            .output()
            .expect("running python");
        assert!(
            out.status.success(),
            "make_scimilarity_ckpt.py failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("reference.json")).unwrap()).unwrap();
        Fixture { _dir: dir, root, reference }
    })
}

fn matrix(v: &serde_json::Value) -> Array2<f32> {
    let rows: Vec<Vec<f32>> =
        v.as_array().unwrap().iter().map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()).collect();
    let (n, m) = (rows.len(), rows[0].len());
    Array2::from_shape_vec((n, m), rows.into_iter().flatten().collect()).unwrap()
}

fn max_abs_diff(a: &Array2<f32>, b: &Array2<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Copies a fixture folder so a test can break it.
fn copy_folder(name: &str) -> (tempfile::TempDir, PathBuf) {
    let src = fixture().root.join(name);
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join(name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}

fn import_err(dir: &Path) -> String {
    match scimilarity::import_dir(dir) {
        Ok(_) => panic!("importing {} should fail", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn check_matches_python(bundle: &GeneratorBundle) {
    let r = &fixture().reference;
    let genes: Vec<String> = r["genes"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
    assert_eq!(bundle.genes, genes, "gene order from gene_order.tsv");
    let model = CpuModel::from_bundle(bundle).unwrap();
    let x = matrix(&r["x"]);
    let z_py = matrix(&r["z"]);
    let x_hat_py = matrix(&r["x_hat"]);

    let z = model.encode(x).unwrap();
    let dz = max_abs_diff(&z, &z_py);
    assert!(dz <= 1e-5, "encoder output differs from Python's by {dz} (backend {})", r["backend"]);
    for row in z.rows() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "encoder output must be L2-normalised, norm {norm}");
    }
    // The decoder on Python's latents, and the full round trip on ours.
    let x_hat = model.decode(z_py.clone());
    let dx = max_abs_diff(&x_hat, &x_hat_py);
    assert!(dx <= 1e-5, "decoder output differs from Python's by {dx} (backend {})", r["backend"]);
    let dxx = max_abs_diff(&model.decode(z), &x_hat_py);
    assert!(dxx <= 1e-5, "encode→decode differs from Python's by {dxx}");
    eprintln!("backend {}: max |Δz| = {dz:.2e}, max |Δx̂| = {dx:.2e}", r["backend"]);
}

#[test]
fn imported_encoder_and_decoder_match_python() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("fm.scddg");
    scdd::cmd::import_scimilarity::run(scdd::cmd::import_scimilarity::Args { dir: f.root.join("model"), out: path.clone() })
        .unwrap();
    let bundle = GeneratorBundle::from_bytes(&std::fs::read(&path).unwrap()).unwrap();

    let s = &bundle.spec;
    assert_eq!((s.n_genes, s.latent_dim), (300, 16));
    assert!(s.denoiser.is_none() && s.task_head.is_none() && bundle.classes.is_empty());
    assert_eq!((s.space.target_sum, s.space.log1p), (1e4, true));
    assert_eq!(bundle.metadata.get("source").map(String::as_str), Some("scimilarity"));
    // Structure: [Dropout, Linear, BatchNorm1d, PReLU] × 2, Linear, L2Normalize; dropouts from
    // hyperparameters.json (input 0.2, hidden 0.3).
    let enc = s.encoder.as_ref().unwrap();
    assert_eq!(enc.layers.len(), 10, "{:?}", enc.layers);
    assert_eq!(enc.layers[0], Layer::Dropout { p: 0.2 });
    assert_eq!(enc.layers[4], Layer::Dropout { p: 0.3 });
    assert!(matches!(enc.layers[9], Layer::L2Normalize { .. }));
    assert!(matches!(s.decoder.layers[0], Layer::Linear { in_dim: 16, out_dim: 32, .. }));
    assert_eq!(s.decoder.layers.len(), 8, "{:?}", s.decoder.layers);
    assert!(!bundle.tensors.keys().any(|k| k.contains("num_batches_tracked")));
    check_matches_python(&bundle);
}

#[test]
fn legacy_torch_save_format_imports_identically() {
    let f = fixture();
    let a = scimilarity::import_dir(&f.root.join("model")).unwrap();
    let b = scimilarity::import_dir(&f.root.join("legacy")).unwrap();
    assert_eq!(a.tensors, b.tensors);
    check_matches_python(&b);
}

#[test]
fn missing_files_are_named() {
    for file in scimilarity::REQUIRED_FILES {
        let (_t, dir) = copy_folder("model");
        std::fs::remove_file(dir.join(file)).unwrap();
        let e = import_err(&dir);
        assert!(e.contains(file) && e.contains("missing"), "{file}: {e}");
    }
    let e = import_err(&fixture().root.join("no-such-folder"));
    assert!(e.contains("no-such-folder"), "{e}");
}

#[test]
fn corrupted_checkpoints_fail_with_the_file_name() {
    let (_t, dir) = copy_folder("model");
    let ckpt = dir.join("encoder.ckpt");
    let bytes = std::fs::read(&ckpt).unwrap();
    // Truncated archive, garbage, an empty file, a damaged pickle inside an intact archive.
    let mut damaged_pickle = bytes.clone();
    let at = find(&damaged_pickle, b"network.0.1.weight").expect("key in data.pkl") - 5;
    damaged_pickle[at] = 0xff; // the BINUNICODE opcode before the first key
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("garbage", b"this is not a checkpoint at all".to_vec()),
        ("empty", Vec::new()),
        ("damaged pickle", damaged_pickle),
    ];
    for (what, content) in cases {
        std::fs::write(&ckpt, &content).unwrap();
        let e = import_err(&dir);
        assert!(e.contains("encoder.ckpt"), "{what}: {e}");
    }
    // A legacy-format file cut inside its storages.
    let (_t2, dir2) = copy_folder("legacy");
    let d = dir2.join("decoder.ckpt");
    let b = std::fs::read(&d).unwrap();
    std::fs::write(&d, &b[..b.len() - 100]).unwrap();
    let e = import_err(&dir2);
    assert!(e.contains("decoder.ckpt") && e.contains("truncated"), "{e}");
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn unexpected_keys_and_wrong_shapes_are_named() {
    let f = fixture();
    let e = import_err(&f.root.join("extra_key"));
    assert!(e.contains("encoder.ckpt") && e.contains("network.0.4.weight") && e.contains("unexpected"), "{e}");
    let e = import_err(&f.root.join("bad_shape"));
    assert!(
        e.contains("encoder.ckpt") && e.contains("`network.1.2.running_var` has shape [33], expected [32]"),
        "{e}"
    );
}

#[test]
fn gene_order_and_layer_sizes_must_agree_with_the_encoder() {
    let (_t, dir) = copy_folder("model");
    let genes = std::fs::read_to_string(dir.join("gene_order.tsv")).unwrap();
    let fewer: String = genes.lines().take(299).map(|g| format!("{g}\n")).collect();
    std::fs::write(dir.join("gene_order.tsv"), fewer).unwrap();
    let e = import_err(&dir);
    assert!(e.contains("gene_order.tsv") && e.contains("299") && e.contains("300"), "{e}");

    let dup = genes.replacen(genes.lines().nth(1).unwrap(), genes.lines().next().unwrap(), 1);
    std::fs::write(dir.join("gene_order.tsv"), dup).unwrap();
    let e = import_err(&dir);
    assert!(e.contains("gene_order.tsv") && e.contains("twice"), "{e}");
    std::fs::write(dir.join("gene_order.tsv"), &genes).unwrap();

    let ls = std::fs::read_to_string(dir.join("layer_sizes.json")).unwrap();
    std::fs::write(dir.join("layer_sizes.json"), ls.replace("[32, 64]", "[33, 64]")).unwrap();
    let e = import_err(&dir);
    assert!(e.contains("layer_sizes.json") && e.contains("network.1.1.weight"), "{e}");

    // Encoder and decoder swapped: the decoder's first block has no Dropout, so keys shift.
    std::fs::write(dir.join("layer_sizes.json"), &ls).unwrap();
    std::fs::copy(fixture().root.join("model/encoder.ckpt"), dir.join("decoder.ckpt")).unwrap();
    let e = import_err(&dir);
    assert!(e.contains("decoder.ckpt") && e.contains("network.0."), "{e}");
}

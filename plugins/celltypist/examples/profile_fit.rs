//! Times the celltypist plugin's fit on a `scdd bench evaluate` directory (meta.json, train.f32).
//! [REPEAT=k] cargo run --release -p scdd-plugin-celltypist --example profile_fit -- DIR [CONFIG_JSON]
use scdd_plugin_api::{Evaluator, FitData, Matrix};
use scdd_plugin_celltypist::CellTypist;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let genes: Vec<String> = meta["genes"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
    let n = meta["n_train"].as_u64().unwrap() as usize;
    let bytes = std::fs::read(dir.join("train.f32")).unwrap();
    let x: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let names: Vec<String> = meta["train_labels"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
    let mut classes = names.clone();
    classes.sort();
    classes.dedup();
    let labels: Vec<u32> = names.iter().map(|c| classes.binary_search(c).unwrap() as u32).collect();
    let class_names: Vec<&str> = classes.iter().map(|s| s.as_str()).collect();
    // REPEAT=k: k fits, the fastest reported (for profilers).
    let repeat: usize = std::env::var("REPEAT").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let mut best = f64::INFINITY;
    for _ in 0..repeat {
        let mut m = CellTypist::create(args.get(2).map(|s| s.as_str()).unwrap_or("{}"), 0).unwrap();
        let t = std::time::Instant::now();
        m.fit(&FitData { x: Matrix { data: &x, n_cells: n, n_genes: genes.len() }, counts: None, labels: &labels, class_names: class_names.clone(), gene_names: vec![] }).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{}: {n} cells × {} genes, {} classes: fit {:.4} s (fastest of {repeat})", dir.display(), genes.len(), classes.len(), best);
}

//! `scdd bench decode`: decoding throughput (cells/s) natively, libtorch on the CPU against the
//! core's CPU reference (the decoder every other implementation is tested against), for random
//! generators of the default sizes (foundation [1024, 1024] → genes, SCDG [512, 512, 256, 128];
//! speed does not depend on the weights' values) at each gene count × code count. It writes the
//! bundles and code files it used to `dir`, where `scripts/browser-bench.sh` picks them up for
//! the same measurement in the browser.
use crate::error::Result;
use crate::foundation::FoundationConfig;
use crate::io::fs;
use crate::nn::TchModel;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::{LatentCodes, Provenance};
use scdd_core::graph::DenoiserSpec;
use scdd_core::reference::CpuModel;
use scdd_core::tensor::Tensor as CoreTensor;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DecodeBenchParams {
    pub genes: Vec<usize>,
    pub cells: Vec<usize>,
    pub classes: usize,
    /// Where the bundles and code files go (reused when present).
    pub dir: PathBuf,
    pub json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct DecodeRow {
    pub genes: usize,
    pub cells: usize,
    pub bundle_bytes: usize,
    pub codes_bytes: usize,
    pub tch_cells_per_s: f64,
    pub reference_cells_per_s: f64,
    /// Largest difference between the two decodes.
    pub max_abs_diff: f32,
}

fn bundle(genes: usize, classes: usize) -> Result<GeneratorBundle> {
    let mut spec = FoundationConfig::default().graph(genes);
    spec.encoder = None;
    spec.denoiser = Some(DenoiserSpec::reference(spec.latent_dim, classes));
    let m = TchModel::init(spec, 0, tch::Device::Cpu)?;
    let names = (0..genes).map(|g| format!("gene{g}")).collect();
    m.to_bundle(names, "cell_type".into(), (0..classes).map(|c| format!("class {c}")).collect(), Default::default())
}

fn codes(b: &GeneratorBundle, n: usize) -> Result<LatentCodes> {
    let k = b.classes.len();
    let latent = b.spec.latent_dim;
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let values: Vec<f32> = (0..n * latent).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    Ok(LatentCodes {
        codes: CoreTensor::from_f32(vec![n, latent], &values)?,
        labels: (0..n).map(|i| (i % k) as u32).collect(),
        classes: b.classes.clone(),
        label_column: b.label_column.clone(),
        spc: n.div_ceil(k) as u32,
        timestep: 500,
        generator_id: b.generator_id(),
        provenance: Provenance {
            source_name: "bench".into(),
            source_shape: (0, b.genes.len() as u64),
            method: "random codes (bench)".into(),
            seed: n as u64,
            scdd_version: scdd_core::SCDD_VERSION.into(),
            created: fs::now_rfc3339(),
            params: Default::default(),
        },
    })
}

pub fn run(p: DecodeBenchParams) -> Result<Vec<DecodeRow>> {
    std::fs::create_dir_all(&p.dir)?;
    let mut rows = Vec::new();
    for &g in &p.genes {
        let b = bundle(g, p.classes)?;
        let bundle_bytes = b.to_bytes();
        fs::write_atomic(&p.dir.join(format!("bundle-{g}.scddg")), &bundle_bytes)?;
        let reference = CpuModel::from_bundle(&b)?;
        let model = TchModel::from_bundle(&b, tch::Device::Cpu)?;
        for &n in &p.cells {
            let c = codes(&b, n)?;
            let codes_bytes = c.to_bytes();
            fs::write_atomic(&p.dir.join(format!("codes-{g}-{n}.scdd")), &codes_bytes)?;
            let z = c.codes.to_f32()?;
            let z_nd = ndarray::Array2::from_shape_vec((n, b.spec.latent_dim), z.clone())?;
            // One warm-up call each (libtorch's first call sets up its thread pool).
            let tch_decode = |n: usize| -> Result<Vec<f32>> {
                tch::no_grad(|| {
                    let zt = tch::Tensor::from_slice(&z[..n * b.spec.latent_dim]).view([n as i64, b.spec.latent_dim as i64]);
                    let t = tch::Tensor::full([n as i64], c.timestep as i64, (tch::Kind::Int64, tch::Device::Cpu));
                    let cl = tch::Tensor::from_slice(&c.labels[..n].iter().map(|&l| l as i64).collect::<Vec<_>>());
                    let x = model.generate(&zt, &t, &cl)?;
                    Ok(Vec::<f32>::try_from(x.to_kind(tch::Kind::Float).contiguous().view(-1))?)
                })
            };
            tch_decode(n.min(16))?;
            reference.generate(&z_nd.slice(ndarray::s![..n.min(16), ..]).to_owned(), c.timestep, &c.labels[..n.min(16)])?;
            let t0 = Instant::now();
            let want = reference.generate(&z_nd, c.timestep, &c.labels)?;
            let reference_s = t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let got = tch_decode(n)?;
            let tch_s = t0.elapsed().as_secs_f64();
            let max_abs_diff = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            rows.push(DecodeRow { genes: g, cells: n, bundle_bytes: bundle_bytes.len(), codes_bytes: codes_bytes.len(), tch_cells_per_s: n as f64 / tch_s, reference_cells_per_s: n as f64 / reference_s, max_abs_diff });
            eprintln!("{g} genes, {n} cells: tch {:.0} cells/s, reference {:.0} cells/s", n as f64 / tch_s, n as f64 / reference_s);
        }
    }
    println!("{}", render(&rows));
    if let Some(j) = &p.json {
        fs::write_json(j, &rows)?;
    }
    Ok(rows)
}

pub fn render(rows: &[DecodeRow]) -> String {
    let mut s = String::from("| genes | cells | bundle MB | codes kB | tch CPU cells/s | core reference cells/s | max |Δ| |\n|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        s += &format!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1e} |\n",
            r.genes,
            r.cells,
            r.bundle_bytes as f64 / 1e6,
            r.codes_bytes as f64 / 1e3,
            r.tch_cells_per_s,
            r.reference_cells_per_s,
            r.max_abs_diff
        );
    }
    s
}

//! A DeepInsight / scDeepInsight-style evaluator plugin (`cnn`): cells become images, a small
//! CNN classifies them.
//!
//! The layout is fit on the training cells and kept with the model:
//! 1. the `max_genes` genes (default `pixels²`) of largest variance over (up to `layout_cells`)
//!    training cells are placed, the rest left out;
//! 2. genes are points whose coordinates are their values across those cells; the two leading
//!    principal axes of that gene × cell matrix place them in 2-D (DeepInsight's PCA option;
//!    block power iteration);
//! 3. the plane is rotated so that the minimum-area rectangle around the convex hull of the
//!    points is axis-aligned, its long side horizontal (rotating calipers over the hull's edges);
//! 4. the rectangle is divided into `pixels × pixels` bins, each axis by rank (`spread: "rank"`,
//!    the default: genes spread evenly, where a PCA layout piles most of them near the origin)
//!    or by position (`"linear"`, DeepInsight's binning); genes sharing a pixel are averaged;
//! 5. each image is min-max scaled to [0, 1] (per cell).
//!
//! Why rank binning of at most `pixels²` genes (plugins/README.md has the table): with linear
//! binning most genes share a few central pixels, which cost 7–8 points on human_kidney and
//! pbmc68k_reduced; rank binning of all genes spreads them evenly but, on pbmc3k (13 656 genes
//! in 1 600 pixels), averages markers with noise (73 %); capping the genes at the pixel count
//! keeps about one gene per pixel.
//!
//! The CNN: two 3×3 convolutions (16, 32 channels) each with batch norm, ReLU and 2×2 max
//! pooling, then the flattened maps through dropout, a 128-unit ReLU layer and a linear layer to
//! the classes. Position is gene identity here, so it must reach the classifier: with global
//! average pooling instead of the flattened maps the CNN reached 57 % on pancreas' full
//! training set (71 % with rank binning), with them 88 % (87 % with rank binning), where
//! logistic regression reaches 91 %. Adam, cross-entropy, `epochs` passes but at least `min_steps` steps. CPU or CUDA
//! (`device`); deterministic on the CPU for a seed.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scdd_plugin_api::{export_plugin, Evaluator, FitData, PredictData, SCDD_NEEDS_LOG_NORMALISED};
use scdd_plugin_nn::{predict, train, write_outputs, TrainSettings};
use serde::Deserialize;
use tch::{nn, Device, Kind, Tensor};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Image side in pixels.
    pub pixels: usize,
    /// Training cells used to fit the layout (a seeded subsample above it).
    pub layout_cells: usize,
    /// How the rotated coordinates become pixels: `linear` (DeepInsight's: positions scaled as
    /// they are) or `rank` (each axis by rank, so genes spread evenly over the image).
    pub spread: Spread,
    /// The most genes placed: those with the largest variance over the layout cells; the rest
    /// are left out of the images. Absent: `pixels²`, so that with rank binning no two genes
    /// need share a pixel.
    pub max_genes: Option<usize>,
    pub epochs: usize,
    pub min_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub dropout: f64,
    pub device: String,
    /// CPU threads for libtorch's operations; 0 (the default) leaves libtorch's choice, since the
    /// convolutions gain from them (100 pancreas cells: 15 s with two threads, 23 s with one).
    pub threads: usize,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Spread {
    Rank,
    Linear,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pixels: 40,
            layout_cells: 2000,
            spread: Spread::Rank,
            max_genes: None,
            epochs: 30,
            min_steps: 300,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            dropout: 0.3,
            device: "auto".into(),
            threads: 0,
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json }).map_err(|e| format!("config: {e}"))?;
        if !(8..=512).contains(&c.pixels) || !c.pixels.is_multiple_of(4) {
            return Err(format!("config pixels = {}: must be a multiple of 4 between 8 and 512", c.pixels));
        }
        if !(2..=1_000_000).contains(&c.layout_cells) {
            return Err(format!("config layout_cells = {}: must be between 2 and 1000000", c.layout_cells));
        }
        if !(0.0..1.0).contains(&c.dropout) {
            return Err(format!("config dropout = {}: must be in [0, 1)", c.dropout));
        }
        if let Some(m) = c.max_genes.filter(|m| !(2..=10_000_000).contains(m)) {
            return Err(format!("config max_genes = {m}: must be between 2 and 10000000"));
        }
        c.settings().check()?;
        scdd_plugin_nn::check_runtime(&c.device, c.threads)?;
        Ok(c)
    }

    fn settings(&self) -> TrainSettings {
        TrainSettings { epochs: self.epochs, min_steps: self.min_steps, batch_size: self.batch_size, lr: self.lr, weight_decay: self.weight_decay }
    }
}

/// Where each gene lands: a pixel index (`pixels²`: left out), and how many genes share each
/// pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub pixels: usize,
    pub pixel_of_gene: Vec<i64>,
    pub genes_per_pixel: Vec<f32>,
}

/// Convex hull (Andrew's monotone chain), counter-clockwise, without collinear points.
pub fn convex_hull(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0);
    let mut hull: Vec<(f64, f64)> = Vec::with_capacity(2 * p.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f64, f64)>> = if pass == 0 { Box::new(p.iter()) } else { Box::new(p.iter().rev()) };
        for &q in iter {
            while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0 {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop();
    }
    hull
}

/// The rotation angle that makes the minimum-area enclosing rectangle of `hull` axis-aligned
/// (one of its sides lies on a hull edge), turned so the long side is horizontal.
pub fn min_area_rotation(hull: &[(f64, f64)]) -> f64 {
    if hull.len() < 3 {
        return 0.0;
    }
    let mut best = (f64::INFINITY, 0.0f64, false);
    for i in 0..hull.len() {
        let (a, b) = (hull[i], hull[(i + 1) % hull.len()]);
        let theta = -(b.1 - a.1).atan2(b.0 - a.0);
        let (s, c) = theta.sin_cos();
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in hull {
            let (rx, ry) = (c * x - s * y, s * x + c * y);
            x0 = x0.min(rx);
            x1 = x1.max(rx);
            y0 = y0.min(ry);
            y1 = y1.max(ry);
        }
        let area = (x1 - x0) * (y1 - y0);
        if area < best.0 {
            best = (area, theta, (y1 - y0) > (x1 - x0));
        }
    }
    if best.2 {
        best.1 + std::f64::consts::FRAC_PI_2
    } else {
        best.1
    }
}

/// The two leading principal axes of genes described by their values across cells:
/// `m` is cells × genes (row-major); returns each gene's 2-D coordinates.
fn gene_pca(m: &Tensor, seed: u64) -> Vec<(f64, f64)> {
    let _g = tch::no_grad_guard();
    // genes × cells, each cell (feature) centred over genes.
    let a = m.transpose(0, 1).to_kind(Kind::Double);
    let a = &a - a.mean_dim(0, true, Kind::Double);
    let cells = a.size()[1];
    tch::manual_seed(seed as i64);
    let mut v = Tensor::randn([cells, 2], (Kind::Double, a.device()));
    for _ in 0..60 {
        let u = a.matmul(&v);
        v = a.transpose(0, 1).matmul(&u);
        let (q, _) = Tensor::linalg_qr(&v, "reduced");
        v = q;
    }
    let coords = a.matmul(&v).to_device(Device::Cpu);
    let flat: Vec<f64> = Vec::<f64>::try_from(coords.contiguous().view(-1)).unwrap_or_default();
    flat.chunks(2).map(|c| (c[0], c[1])).collect()
}

impl Layout {
    /// Fits the layout on the training cells `x` (cells × genes): the `max_genes` genes of largest
    /// variance over (up to `max_cells` of) them are placed.
    pub fn fit(x: &Tensor, pixels: usize, max_cells: usize, max_genes: usize, spread: Spread, seed: u64) -> Layout {
        let n = x.size()[0] as usize;
        let rows: Tensor = if n > max_cells {
            let mut idx: Vec<i64> = (0..n as i64).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            idx.truncate(max_cells);
            idx.sort_unstable();
            x.index_select(0, &Tensor::from_slice(&idx).to_device(x.device()))
        } else {
            x.shallow_clone()
        };
        let g = x.size()[1] as usize;
        let placed: Vec<i64> = if g > max_genes {
            let var: Vec<f64> = Vec::<f64>::try_from(rows.to_kind(Kind::Double).var_dim(&[0i64][..], false, false).to_device(Device::Cpu)).unwrap_or_default();
            let mut order: Vec<usize> = (0..g).collect();
            order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
            let mut keep: Vec<i64> = order[..max_genes].iter().map(|&j| j as i64).collect();
            keep.sort_unstable();
            keep
        } else {
            (0..g as i64).collect()
        };
        let rows = if placed.len() < g { rows.index_select(1, &Tensor::from_slice(&placed).to_device(x.device())) } else { rows };
        let pts = gene_pca(&rows, seed);
        let theta = min_area_rotation(&convex_hull(&pts));
        let (s, c) = theta.sin_cos();
        let mut rot: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (c * x - s * y, s * x + c * y)).collect();
        if spread == Spread::Rank {
            let n = rot.len().max(2) as f64 - 1.0;
            for axis in 0..2 {
                let get = |p: &(f64, f64)| if axis == 0 { p.0 } else { p.1 };
                let mut order: Vec<usize> = (0..rot.len()).collect();
                order.sort_by(|&a, &b| get(&rot[a]).total_cmp(&get(&rot[b])).then(a.cmp(&b)));
                for (r, &i) in order.iter().enumerate() {
                    let v = r as f64 / n;
                    if axis == 0 {
                        rot[i].0 = v;
                    } else {
                        rot[i].1 = v;
                    }
                }
            }
        }
        let (x0, x1) = rot.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.0), a.1.max(p.0)));
        let (y0, y1) = rot.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| (a.0.min(p.1), a.1.max(p.1)));
        let bin = |v: f64, lo: f64, hi: f64| -> i64 {
            if hi > lo {
                (((v - lo) / (hi - lo)) * (pixels as f64 - 1.0)).round().clamp(0.0, pixels as f64 - 1.0) as i64
            } else {
                0
            }
        };
        let mut pixel_of_gene = vec![(pixels * pixels) as i64; g];
        for (&j, &(x, y)) in placed.iter().zip(&rot) {
            pixel_of_gene[j as usize] = bin(y, y0, y1) * pixels as i64 + bin(x, x0, x1);
        }
        let mut genes_per_pixel = vec![0f32; pixels * pixels];
        for &p in pixel_of_gene.iter().filter(|&&p| p < (pixels * pixels) as i64) {
            genes_per_pixel[p as usize] += 1.0;
        }
        Layout { pixels, pixel_of_gene, genes_per_pixel }
    }

    /// Images (cells × 1 × pixels × pixels) of the cells `x`: genes averaged per pixel, each
    /// image min-max scaled to [0, 1].
    pub fn images(&self, x: &Tensor) -> Tensor {
        let _g = tch::no_grad_guard();
        let n = x.size()[0];
        let p = (self.pixels * self.pixels) as i64;
        let dev = x.device();
        let idx = Tensor::from_slice(&self.pixel_of_gene).to_device(dev);
        // One column more for the genes left out.
        let sums = Tensor::zeros([n, p + 1], (Kind::Float, dev)).index_add(1, &idx, &x.to_kind(Kind::Float)).narrow(1, 0, p);
        let counts = Tensor::from_slice(&self.genes_per_pixel).to_device(dev).clamp_min(1.0);
        let img = sums / counts;
        let lo = img.amin(&[1i64][..], true);
        let hi = img.amax(&[1i64][..], true);
        let range = (&hi - &lo).clamp_min(1e-12);
        ((img - lo) / range).view([n, 1, self.pixels as i64, self.pixels as i64])
    }
}

struct Net {
    c1: nn::Conv2D,
    b1: nn::BatchNorm,
    c2: nn::Conv2D,
    b2: nn::BatchNorm,
    fc: nn::Linear,
    out: nn::Linear,
    dropout: f64,
}

impl Net {
    /// Two conv blocks, then fully connected layers over the flattened maps: where a pattern
    /// sits says which genes it is, so the position must reach the classifier (global average
    /// pooling would throw it away).
    fn new(p: &nn::Path, pixels: i64, k: i64, dropout: f64) -> Net {
        let conv = |name: &str, i: i64, o: i64| nn::conv2d(p / name, i, o, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let side = pixels / 4;
        Net {
            c1: conv("c1", 1, 16),
            b1: nn::batch_norm2d(p / "b1", 16, Default::default()),
            c2: conv("c2", 16, 32),
            b2: nn::batch_norm2d(p / "b2", 32, Default::default()),
            fc: nn::linear(p / "fc", 32 * side * side, 128, Default::default()),
            out: nn::linear(p / "out", 128, k, Default::default()),
            dropout,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let h = x.apply(&self.c1).apply_t(&self.b1, train).relu().max_pool2d_default(2);
        let h = h.apply(&self.c2).apply_t(&self.b2, train).relu().max_pool2d_default(2);
        h.flatten(1, -1).dropout(self.dropout, train).apply(&self.fc).relu().dropout(self.dropout, train).apply(&self.out)
    }
}

pub struct Cnn {
    config: Config,
    seed: u64,
    device: Device,
    n_genes: usize,
    fitted: Option<(nn::VarStore, Net, Layout)>,
}

fn cells(m: &scdd_plugin_api::Matrix, device: Device) -> Tensor {
    Tensor::from_slice(m.data).view([m.n_cells as i64, m.n_genes as i64]).to_device(device)
}

impl Evaluator for Cnn {
    fn create(config_json: &str, seed: u64) -> Result<Self, String> {
        let config = Config::parse(config_json)?;
        let device = scdd_plugin_nn::device(&config.device)?;
        Ok(Cnn { config, seed, device, n_genes: 0, fitted: None })
    }

    fn fit(&mut self, data: &FitData<'_>) -> Result<(), String> {
        scdd_plugin_nn::set_threads(self.config.threads);
        tch::manual_seed(self.seed as i64);
        let x = cells(&data.x, self.device);
        let max_genes = self.config.max_genes.unwrap_or(self.config.pixels * self.config.pixels);
        let layout = Layout::fit(&x, self.config.pixels, self.config.layout_cells, max_genes, self.config.spread, self.seed);
        let images = layout.images(&x);
        let y = Tensor::from_slice(&data.labels.iter().map(|&v| v as i64).collect::<Vec<_>>()).to_device(self.device);
        let vs = nn::VarStore::new(self.device);
        let net = Net::new(&vs.root(), self.config.pixels as i64, data.class_names.len() as i64, self.config.dropout);
        train(&vs, &images, &y, &self.config.settings(), self.seed, |b, t| net.forward(b, t))?;
        self.n_genes = data.x.n_genes;
        self.fitted = Some((vs, net, layout));
        Ok(())
    }

    fn predict(&mut self, data: &PredictData<'_>, labels: &mut [u32], probs: &mut [f32]) -> Result<(), String> {
        scdd_plugin_nn::set_threads(self.config.threads);
        let Some((_, net, layout)) = &self.fitted else { return Err("predict before fit".into()) };
        if data.x.n_genes != self.n_genes {
            return Err(format!("{} genes, fitted on {}", data.x.n_genes, self.n_genes));
        }
        let images = layout.images(&cells(&data.x, self.device));
        write_outputs(&predict(&images, 256, |b, t| net.forward(b, t)), labels, probs)
    }
}

export_plugin!(Cnn, name: "cnn", version: "0.1.0", needs: SCDD_NEEDS_LOG_NORMALISED, resources: "");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hull_and_the_rectangle_are_right_on_a_rotated_box() {
        // A 4 × 1 rectangle turned by 30°, with points inside.
        let (s, c) = (0.5f64, 0.75f64.sqrt());
        let rot = |x: f64, y: f64| (c * x - s * y, s * x + c * y);
        let mut pts = vec![rot(0.0, 0.0), rot(4.0, 0.0), rot(4.0, 1.0), rot(0.0, 1.0)];
        pts.extend([rot(1.0, 0.5), rot(2.0, 0.2), rot(3.5, 0.9)]);
        let hull = convex_hull(&pts);
        assert_eq!(hull.len(), 4, "{hull:?}");
        let theta = min_area_rotation(&hull);
        let (st, ct) = theta.sin_cos();
        let r: Vec<(f64, f64)> = pts.iter().map(|&(x, y)| (ct * x - st * y, st * x + ct * y)).collect();
        let w = r.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max) - r.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let h = r.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max) - r.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        assert!((w - 4.0).abs() < 1e-9 && (h - 1.0).abs() < 1e-9, "{w} × {h}");
    }

    #[test]
    fn images_average_genes_per_pixel_and_scale_each_cell() {
        let layout = Layout { pixels: 2, pixel_of_gene: vec![0, 0, 3], genes_per_pixel: vec![2.0, 0.0, 0.0, 1.0] };
        let x = Tensor::from_slice(&[1.0f32, 3.0, 4.0, 0.0, 0.0, 0.0]).view([2, 3]);
        let img = layout.images(&x);
        let v: Vec<f32> = Vec::<f32>::try_from(img.view(-1)).unwrap();
        // Cell 0: pixel 0 = mean(1, 3) = 2, pixel 3 = 4, others 0 → scaled by 4.
        assert_eq!(&v[..4], &[0.5, 0.0, 0.0, 1.0]);
        assert_eq!(&v[4..], &[0.0; 4], "an empty cell stays empty");
    }

    #[test]
    fn only_the_most_variable_genes_are_placed() {
        // 6 genes, variances rising with the index; room for 4 (2 × 2 pixels).
        let n = 8;
        let x: Vec<f32> = (0..n).flat_map(|i| (0..6).map(move |j| if i % 2 == 0 { j as f32 } else { 0.0 })).collect();
        let x = Tensor::from_slice(&x).view([n, 6]);
        let layout = Layout::fit(&x, 2, 100, 4, Spread::Rank, 0);
        let out = 4i64;
        assert_eq!(&layout.pixel_of_gene[..2], &[out, out], "the two flattest genes are left out");
        assert!(layout.pixel_of_gene[2..].iter().all(|&p| (0..out).contains(&p)), "{:?}", layout.pixel_of_gene);
        assert_eq!(layout.genes_per_pixel.iter().sum::<f32>(), 4.0);
        // A left-out gene moves no pixel.
        let mut y: Vec<f32> = vec![0.0; 6];
        y[0] = 100.0;
        y[5] = 1.0;
        let img: Vec<f32> = Vec::<f32>::try_from(layout.images(&Tensor::from_slice(&y).view([1, 6])).view(-1)).unwrap();
        let p5 = layout.pixel_of_gene[5] as usize;
        assert_eq!(img[p5], 1.0, "{img:?}");
        assert!(Config::parse(r#"{"max_genes": 1}"#).unwrap_err().contains("max_genes = 1"));
    }

    #[test]
    fn it_learns_separable_classes() {
        use scdd_plugin_api::Matrix;
        let (n, g, k) = (90usize, 60usize, 3usize);
        let (x, y, xt, yt) = scdd_plugin_nn::toy_classes(n, g, 30);
        let mut m = Cnn::create(r#"{"pixels": 12, "min_steps": 150, "device": "cpu", "threads": 1}"#, 3).unwrap();
        assert!(Cnn::create(r#"{"pixels": 10}"#, 0).is_err(), "pixels must pool twice");
        let names = ["a", "b", "c"];
        m.fit(&FitData { x: Matrix { data: &x, n_cells: n, n_genes: g }, counts: None, labels: &y, class_names: names.to_vec(), gene_names: vec![] }).unwrap();
        let (mut l, mut p) = (vec![0u32; n], vec![0f32; n * k]);
        m.predict(&PredictData { x: Matrix { data: &xt, n_cells: n, n_genes: g }, counts: None }, &mut l, &mut p).unwrap();
        let acc = l.iter().zip(&yt).filter(|(a, b)| a == b).count() as f64 / n as f64;
        assert!(acc > 0.9, "accuracy {acc}");
        assert!(Config::parse(r#"{"pixels": 2}"#).unwrap_err().contains("pixels = 2"));
        assert!(Config::parse(r#"{"device": "tpu"}"#).unwrap_err().contains("device"));
    }
}

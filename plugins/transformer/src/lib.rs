//! A TOSICA-style evaluator plugin (`transformer`): gene sets become tokens, a transformer
//! reads them, the CLS token classifies.
//!
//! - Input: the `max_genes` genes of largest variance over the training cells (all when fewer).
//! - Gene sets: from a GMT file (`{"gmt": "sets.gmt"}`: `name<TAB>description<TAB>gene…` per
//!   line; sets with fewer than `min_set_size` of the input genes are dropped, at most
//!   `max_tokens` kept, largest first) or, without one, `tokens` random sets (each gene in
//!   `random_overlap` of them; seeded).
//! - Masked linear embedding: token `t` is `x[set_t] · W_t + b_t`, a `dim`-vector from the
//!   genes of its set only — TOSICA's masked dense layer, stored per set (each set's genes
//!   padded to the largest set, the padding masked) so that it is one batched product over
//!   the sets instead of a dense genes × (sets · dim) matrix that is almost all zeros.
//! - A learned CLS token is prepended; `layers` pre-norm encoder layers (`heads`-head
//!   self-attention, a GELU MLP of `2·dim`), a final layer norm, a linear head on CLS.
//! - Adam, cross-entropy, `epochs` passes but at least `min_steps` steps; CPU or CUDA.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use scdd_plugin_api::{export_plugin, Evaluator, FitData, PredictData, SCDD_NEEDS_GENE_NAMES, SCDD_NEEDS_LOG_NORMALISED};
use scdd_plugin_nn::{predict, train, write_outputs, TrainSettings};
use serde::Deserialize;
use std::collections::HashMap;
use tch::{nn, nn::Module, Device, Kind, Tensor};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// A GMT file of gene sets (the `gmt` resource); random sets when absent.
    pub gmt: Option<String>,
    pub max_genes: usize,
    /// Random sets: how many, and in how many sets each gene is.
    pub tokens: usize,
    pub random_overlap: usize,
    /// GMT sets: the fewest input genes a set must have, and the most sets kept.
    pub min_set_size: usize,
    pub max_tokens: usize,
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
    pub dropout: f64,
    pub epochs: usize,
    pub min_steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub device: String,
    /// CPU threads for libtorch's operations; 0 (the default) leaves libtorch's choice. On a
    /// busy machine a tiny model is better off with 1: each small operation pays for waking the
    /// threads (the unit test below took 184 s with two threads and 4 s with one).
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            gmt: None,
            max_genes: 2000,
            tokens: 64,
            // Each gene in 4 random sets, not 2: on the full training sets pbmc68k_reduced
            // 75.2 → 79.5 %, human_kidney 94.9 → 95.7, pbmc3k 88.0 → 88.5 (8: 79.8 on
            // pbmc68k_reduced, twice the embedding's cost); plugins/README.md.
            random_overlap: 4,
            min_set_size: 5,
            max_tokens: 300,
            dim: 48,
            heads: 4,
            layers: 2,
            dropout: 0.1,
            epochs: 20,
            min_steps: 300,
            batch_size: 64,
            lr: 1e-3,
            weight_decay: 1e-4,
            device: "auto".into(),
            threads: 0,
        }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        let c: Config = serde_json::from_str(if json.trim().is_empty() { "{}" } else { json }).map_err(|e| format!("config: {e}"))?;
        for (f, v, lo, hi) in [
            ("max_genes", c.max_genes, 2, 100_000),
            ("tokens", c.tokens, 1, 10_000),
            ("random_overlap", c.random_overlap, 1, 100),
            ("min_set_size", c.min_set_size, 1, 100_000),
            ("max_tokens", c.max_tokens, 1, 10_000),
            ("dim", c.dim, 4, 4096),
            ("heads", c.heads, 1, 64),
            ("layers", c.layers, 1, 48),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(format!("config {f} = {v}: must be between {lo} and {hi}"));
            }
        }
        if !c.dim.is_multiple_of(c.heads) {
            return Err(format!("config dim = {} is not a multiple of heads = {}", c.dim, c.heads));
        }
        if c.random_overlap > c.tokens {
            return Err(format!("config random_overlap = {} exceeds tokens = {}", c.random_overlap, c.tokens));
        }
        if !(0.0..1.0).contains(&c.dropout) {
            return Err(format!("config dropout = {}: must be in [0, 1)", c.dropout));
        }
        if let Some(p) = &c.gmt {
            if !std::path::Path::new(p).is_file() {
                return Err(format!("config gmt: {p} does not exist"));
            }
        }
        c.settings().check()?;
        scdd_plugin_nn::check_runtime(&c.device, c.threads)?;
        Ok(c)
    }

    fn settings(&self) -> TrainSettings {
        TrainSettings { epochs: self.epochs, min_steps: self.min_steps, batch_size: self.batch_size, lr: self.lr, weight_decay: self.weight_decay }
    }
}

/// Gene sets of a GMT text over `genes` (indices into it): sets with at least `min_size` of the
/// genes, the `max_sets` largest (ties by file order).
pub fn gmt_sets(text: &str, genes: &[&str], min_size: usize, max_sets: usize) -> Result<Vec<(String, Vec<usize>)>, String> {
    let index: HashMap<String, usize> = genes.iter().enumerate().map(|(i, g)| (g.to_ascii_uppercase(), i)).collect();
    let mut sets: Vec<(String, Vec<usize>)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        if line.trim().is_empty() {
            continue;
        }
        if fields.len() < 3 {
            return Err(format!("gmt line {}: expected name, description and genes separated by tabs", n + 1));
        }
        let mut members: Vec<usize> = fields[2..].iter().filter_map(|g| index.get(&g.trim().to_ascii_uppercase()).copied()).collect();
        members.sort_unstable();
        members.dedup();
        if members.len() >= min_size {
            sets.push((fields[0].to_string(), members));
        }
    }
    if sets.is_empty() {
        return Err(format!("gmt: no set has {min_size} or more of the input genes (are the gene names symbols of the same species?)"));
    }
    sets.sort_by_key(|s| std::cmp::Reverse(s.1.len()));
    sets.truncate(max_sets);
    Ok(sets)
}

/// `tokens` random sets over `n_genes` genes, each gene in `overlap` distinct sets.
pub fn random_sets(n_genes: usize, tokens: usize, overlap: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x70_5c1c);
    let mut sets = vec![Vec::new(); tokens];
    let mut ids: Vec<usize> = (0..tokens).collect();
    for g in 0..n_genes {
        let (chosen, _) = ids.partial_shuffle(&mut rng, overlap);
        for &t in chosen.iter() {
            sets[t].push(g);
        }
    }
    sets
}

struct Block {
    ln1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ln2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

struct Net {
    /// The masked linear embedding, stored per set: set `t`'s genes are the input columns
    /// `set_gene[t, ..]` (padded to the largest set with column 0, `set_mask` 0 there), its
    /// weights `embed_w[t]` (`largest × dim`). Token `t` is
    /// `Σ_l x[set_gene[t, l]] · set_mask[t, l] · embed_w[t, l] + embed_b[t]`.
    embed_w: Tensor,
    embed_b: Tensor,
    set_gene: Tensor,
    set_mask: Tensor,
    cls: Tensor,
    blocks: Vec<Block>,
    ln: nn::LayerNorm,
    head: nn::Linear,
    tokens: i64,
    dim: i64,
    heads: i64,
    dropout: f64,
}

impl Net {
    fn new(p: &nn::Path, n_genes: i64, sets: &[Vec<usize>], c: &Config, k: i64, device: Device) -> Net {
        let (t, d) = (sets.len() as i64, c.dim as i64);
        let _ = n_genes;
        let width = sets.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let (mut genes, mut mask, mut fan) = (vec![0i64; sets.len() * width], vec![0f32; sets.len() * width], Vec::new());
        for (ti, set) in sets.iter().enumerate() {
            for (l, &g) in set.iter().enumerate() {
                genes[ti * width + l] = g as i64;
                mask[ti * width + l] = 1.0;
            }
            // Each token's weights scaled by its own fan-in.
            fan.push(1.0 / (set.len().max(1) as f32).sqrt());
        }
        let w = width as i64;
        let set_mask = Tensor::from_slice(&mask).to_device(device).view([t, w, 1]);
        let scale = Tensor::from_slice(&fan).to_device(device).view([t, 1, 1]) * &set_mask;
        let embed_w = p.var_copy("embed_w", &(Tensor::randn([t, w, d], (Kind::Float, device)) * scale));
        let embed_b = p.zeros("embed_b", &[t, d]);
        let set_gene = Tensor::from_slice(&genes).to_device(device).view([t, w]);
        let cls = p.var("cls", &[1, 1, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        let blocks = (0..c.layers)
            .map(|i| {
                let b = p / format!("block{i}");
                Block {
                    ln1: nn::layer_norm(&b / "ln1", vec![d], Default::default()),
                    qkv: nn::linear(&b / "qkv", d, 3 * d, Default::default()),
                    proj: nn::linear(&b / "proj", d, d, Default::default()),
                    ln2: nn::layer_norm(&b / "ln2", vec![d], Default::default()),
                    fc1: nn::linear(&b / "fc1", d, 2 * d, Default::default()),
                    fc2: nn::linear(&b / "fc2", 2 * d, d, Default::default()),
                }
            })
            .collect();
        Net {
            embed_w,
            embed_b,
            set_gene,
            set_mask,
            cls,
            blocks,
            ln: nn::layer_norm(p / "ln", vec![d], Default::default()),
            head: nn::linear(p / "head", d, k, Default::default()),
            tokens: t,
            dim: d,
            heads: c.heads as i64,
            dropout: c.dropout,
        }
    }

    fn attention(&self, b: &Block, x: &Tensor, train: bool) -> Tensor {
        let (n, s, d) = (x.size()[0], x.size()[1], self.dim);
        let h = self.heads;
        let qkv = b.qkv.forward(x).view([n, s, 3, h, d / h]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let att = (q.matmul(&k.transpose(-2, -1)) / ((d / h) as f64).sqrt()).softmax(-1, Kind::Float).dropout(self.dropout, train);
        att.matmul(&v).transpose(1, 2).reshape([n, s, d]).apply(&b.proj)
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let n = x.size()[0];
        let w = self.set_gene.size()[1];
        // [sets, cells, width] · [sets, width, dim] → [sets, cells, dim]
        let xs = x.index_select(1, &self.set_gene.view(-1)).view([n, self.tokens, w]).transpose(0, 1);
        let tokens = xs.bmm(&(&self.embed_w * &self.set_mask)).transpose(0, 1) + &self.embed_b;
        let mut h = Tensor::cat(&[self.cls.expand([n, 1, self.dim], true), tokens], 1).dropout(self.dropout, train);
        for b in &self.blocks {
            h = &h + self.attention(b, &h.apply(&b.ln1), train).dropout(self.dropout, train);
            let m = h.apply(&b.ln2).apply(&b.fc1).gelu("none").dropout(self.dropout, train).apply(&b.fc2);
            h = &h + m.dropout(self.dropout, train);
        }
        h.apply(&self.ln).select(1, 0).apply(&self.head)
    }
}

pub struct Transformer {
    config: Config,
    seed: u64,
    device: Device,
    n_genes: usize,
    /// Input columns the model reads.
    genes: Vec<i64>,
    fitted: Option<(nn::VarStore, Net)>,
}

impl Transformer {
    fn input(&self, m: &scdd_plugin_api::Matrix) -> Tensor {
        let x = Tensor::from_slice(m.data).view([m.n_cells as i64, m.n_genes as i64]).to_device(self.device);
        x.index_select(1, &Tensor::from_slice(&self.genes).to_device(self.device))
    }
}

impl Evaluator for Transformer {
    fn create(config_json: &str, seed: u64) -> Result<Self, String> {
        let config = Config::parse(config_json)?;
        let device = scdd_plugin_nn::device(&config.device)?;
        Ok(Transformer { config, seed, device, n_genes: 0, genes: Vec::new(), fitted: None })
    }

    fn fit(&mut self, data: &FitData<'_>) -> Result<(), String> {
        scdd_plugin_nn::set_threads(self.config.threads);
        let (n, g) = (data.x.n_cells, data.x.n_genes);
        // The most variable genes (ties by position).
        let mut var: Vec<(f64, usize)> = (0..g)
            .map(|j| {
                let col = (0..n).map(|i| data.x.data[i * g + j] as f64);
                let m = col.clone().sum::<f64>() / n as f64;
                (col.map(|v| (v - m).powi(2)).sum::<f64>() / n as f64, j)
            })
            .collect();
        var.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut genes: Vec<usize> = var.iter().take(self.config.max_genes).map(|v| v.1).collect();
        genes.sort_unstable();
        let sets: Vec<Vec<usize>> = match &self.config.gmt {
            Some(path) => {
                if data.gene_names.len() != g {
                    return Err("gene sets need the gene names, which the host did not pass".into());
                }
                let text = std::fs::read_to_string(path).map_err(|e| format!("gmt {path}: {e}"))?;
                let names: Vec<&str> = genes.iter().map(|&j| data.gene_names[j]).collect();
                gmt_sets(&text, &names, self.config.min_set_size, self.config.max_tokens)?.into_iter().map(|s| s.1).collect()
            }
            None => random_sets(genes.len(), self.config.tokens, self.config.random_overlap, self.seed),
        };
        self.genes = genes.iter().map(|&j| j as i64).collect();
        self.n_genes = g;
        tch::manual_seed(self.seed as i64);
        let x = self.input(&data.x);
        let y = Tensor::from_slice(&data.labels.iter().map(|&v| v as i64).collect::<Vec<_>>()).to_device(self.device);
        let vs = nn::VarStore::new(self.device);
        let net = Net::new(&vs.root(), genes.len() as i64, &sets, &self.config, data.class_names.len() as i64, self.device);
        train(&vs, &x, &y, &self.config.settings(), self.seed, |b, t| net.forward(b, t))?;
        self.fitted = Some((vs, net));
        Ok(())
    }

    fn predict(&mut self, data: &PredictData<'_>, labels: &mut [u32], probs: &mut [f32]) -> Result<(), String> {
        scdd_plugin_nn::set_threads(self.config.threads);
        let Some((_, net)) = &self.fitted else { return Err("predict before fit".into()) };
        if data.x.n_genes != self.n_genes {
            return Err(format!("{} genes, fitted on {}", data.x.n_genes, self.n_genes));
        }
        write_outputs(&predict(&self.input(&data.x), 256, |b, t| net.forward(b, t)), labels, probs)
    }
}

export_plugin!(Transformer, name: "transformer", version: "0.1.0", needs: SCDD_NEEDS_LOG_NORMALISED | SCDD_NEEDS_GENE_NAMES, resources: "gmt");

#[cfg(test)]
mod tests {
    use super::*;
    use scdd_plugin_api::Matrix;

    #[test]
    fn gene_sets_come_from_gmt_or_at_random() {
        let genes = ["CD3E", "CD4", "CD8A", "MS4A1", "CD19", "LYZ"];
        let gmt = "T\tt cells\tcd3e\tCD4\tCD8A\tNOPE\nB\tb cells\tMS4A1\tCD19\nX\tnone\tFOO\n";
        let sets = gmt_sets(gmt, &genes, 2, 10).unwrap();
        assert_eq!(sets, vec![("T".to_string(), vec![0, 1, 2]), ("B".to_string(), vec![3, 4])]);
        assert_eq!(gmt_sets(gmt, &genes, 2, 1).unwrap().len(), 1);
        assert!(gmt_sets("T only one field\n", &genes, 1, 10).unwrap_err().contains("line 1"));
        assert!(gmt_sets(gmt, &genes, 5, 10).unwrap_err().contains("no set has 5"));
        let r = random_sets(100, 8, 2, 1);
        assert_eq!(r.iter().map(Vec::len).sum::<usize>(), 200);
        assert_eq!(r, random_sets(100, 8, 2, 1), "seeded");
    }

    #[test]
    fn it_learns_separable_classes_with_and_without_a_gmt() {
        let (n, g, k) = (90usize, 30usize, 3usize);
        let (x, y, xt, yt) = scdd_plugin_nn::toy_classes(n, g, 15);
        let names: Vec<String> = (0..g).map(|j| format!("G{j}")).collect();
        let dir = std::env::temp_dir().join(format!("scdd-tosica-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gmt = dir.join("sets.gmt");
        let set = |c: usize| (0..15).filter(|j| j % k == c).map(|j| format!("G{j}")).collect::<Vec<_>>().join("\t");
        std::fs::write(&gmt, format!("A\t-\t{}\nB\t-\t{}\nC\t-\t{}\n", set(0), set(1), set(2))).unwrap();
        for config in [r#"{"tokens": 8, "min_steps": 150, "device": "cpu", "threads": 1}"#.to_string(), format!(r#"{{"gmt": "{}", "min_steps": 150, "device": "cpu", "threads": 1}}"#, gmt.display())] {
            let mut m = Transformer::create(&config, 5).unwrap();
            let fit = FitData {
                x: Matrix { data: &x, n_cells: n, n_genes: g },
                counts: None,
                labels: &y,
                class_names: vec!["a", "b", "c"],
                gene_names: names.iter().map(String::as_str).collect(),
            };
            m.fit(&fit).unwrap();
            let (mut l, mut p) = (vec![0u32; n], vec![0f32; n * k]);
            m.predict(&PredictData { x: Matrix { data: &xt, n_cells: n, n_genes: g }, counts: None }, &mut l, &mut p).unwrap();
            let acc = l.iter().zip(&yt).filter(|(a, b)| a == b).count() as f64 / n as f64;
            assert!(acc > 0.9, "{config}: accuracy {acc}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Config::parse(r#"{"gmt": "/no/such.gmt"}"#).unwrap_err().contains("/no/such.gmt does not exist"));
        assert!(Config::parse(r#"{"dim": 10, "heads": 4}"#).unwrap_err().contains("multiple of heads"));
    }
}

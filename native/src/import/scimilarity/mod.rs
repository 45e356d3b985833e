//! Import of SCimilarity model folders as scdd foundation bundles (`scdd import-scimilarity`).
//!
//! A SCimilarity model folder holds
//!
//! * `encoder.ckpt`, `decoder.ckpt` — `torch.save({"state_dict": module.state_dict()})`, read by
//!   [`ckpt`] without Python or libtorch;
//! * `layer_sizes.json` — encoder state-dict key → shape (SCimilarity infers its architecture
//!   from it; here it is checked against `encoder.ckpt`);
//! * `gene_order.tsv` — the encoder's input genes, one per line;
//! * optionally `hyperparameters.json` (`dropout`, `input_dropout`, used for the dropout layers).
//!
//! SCimilarity's modules (state-dict keys under `network.`):
//!
//! ```text
//! encoder  network.i = Sequential(Dropout, Linear, BatchNorm1d, PReLU)   i < n  (keys network.i.{1,2,3}.*)
//!          network.n = Linear(hidden[-1], latent);  output L2-normalised (F.normalize, eps 1e-12)
//! decoder  network.0 = Sequential(Linear, BatchNorm1d, PReLU)                   (keys network.0.{0,1,2}.*)
//!          network.i = Sequential(Dropout, Linear, BatchNorm1d, PReLU)   0 < i < n
//!          network.n = Linear(hidden[-1], n_genes)
//! ```
//!
//! They map one-to-one onto scdd [`Layer`]s (`encoder.K.*`, `decoder.K.*`, `K` the position in
//! the flattened layer list), so the CPU reference and the tch trainer run them unchanged.
//! BatchNorm's `num_batches_tracked` is dropped (inference uses only the running statistics).
//! Residual SCimilarity variants (`residual=True`) have the same keys and cannot be told apart
//! from a checkpoint; they are not supported (SCimilarity's released models do not use them).
pub mod ckpt;

use crate::error::{err, bail, Context, Result};
use ckpt::{TorchSave, TensorRef};
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::{layer_param, ExpressionSpace, GraphSpec, Layer, NoiseSchedule, Stack};
use scdd_core::tensor::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The files a SCimilarity model folder must have.
pub const REQUIRED_FILES: [&str; 4] = ["encoder.ckpt", "decoder.ckpt", "layer_sizes.json", "gene_order.tsv"];

/// SCimilarity's defaults, used when the folder has no `hyperparameters.json`.
pub const DEFAULT_DROPOUT: f32 = 0.5;
pub const DEFAULT_INPUT_DROPOUT: f32 = 0.4;
/// `nn.BatchNorm1d`'s default eps (not stored in checkpoints).
pub const BN_EPS: f32 = 1e-5;
/// `F.normalize`'s default eps.
pub const L2_EPS: f32 = 1e-12;

/// Which of the two SCimilarity networks a checkpoint holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Encoder,
    Decoder,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Encoder => "encoder",
            Part::Decoder => "decoder",
        }
    }
    /// Index of the Linear layer inside `network.i`'s Sequential.
    fn linear_at(self, block: usize) -> usize {
        if self == Part::Decoder && block == 0 {
            0
        } else {
            1
        }
    }
    fn describe_block(self, block: usize) -> &'static str {
        if self.linear_at(block) == 0 {
            "Sequential(Linear, BatchNorm1d, PReLU)"
        } else {
            "Sequential(Dropout, Linear, BatchNorm1d, PReLU)"
        }
    }
    /// SCimilarity's structure, for error messages.
    fn describe(self) -> &'static str {
        match self {
            Part::Encoder => {
                "network.<i> = Sequential(Dropout, Linear, BatchNorm1d, PReLU) for each hidden layer, then network.<n> = Linear"
            }
            Part::Decoder => {
                "network.0 = Sequential(Linear, BatchNorm1d, PReLU), network.<i> = Sequential(Dropout, Linear, \
                 BatchNorm1d, PReLU) for the other hidden layers, then network.<n> = Linear"
            }
        }
    }
}

/// A SCimilarity MLP as found in a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub in_dim: usize,
    pub hidden: Vec<usize>,
    pub out_dim: usize,
    /// PReLU `num_parameters` per hidden block (1 in SCimilarity).
    pub prelu: Vec<usize>,
}

/// One checkpoint tensor and where it goes in the bundle.
#[derive(Clone, Debug)]
struct Mapped {
    ckpt_key: String,
    scdd_name: String,
    shape: Vec<usize>,
}

/// A parsed, checked network: its scdd stack and the tensors to copy.
struct Network {
    layout: Layout,
    stack: Stack,
    map: Vec<Mapped>,
}

/// Dropout probabilities for the imported stacks (only used if the model is trained further).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropouts {
    pub dropout: f32,
    pub input_dropout: f32,
}

impl Default for Dropouts {
    fn default() -> Self {
        Dropouts { dropout: DEFAULT_DROPOUT, input_dropout: DEFAULT_INPUT_DROPOUT }
    }
}

/// Reads a SCimilarity model folder into a validated foundation bundle (encoder + decoder,
/// no denoiser). Every error names the file and, where there is one, the state-dict key.
pub fn import_dir(dir: &Path) -> Result<GeneratorBundle> {
    if !dir.is_dir() {
        bail!("{}: not a directory (expected a SCimilarity model folder)", dir.display());
    }
    let missing: Vec<&str> = REQUIRED_FILES.iter().copied().filter(|f| !dir.join(f).is_file()).collect();
    if !missing.is_empty() {
        bail!(
            "{}: not a SCimilarity model folder: missing {} (it needs {})",
            dir.display(),
            missing.join(", "),
            REQUIRED_FILES.join(", ")
        );
    }
    let genes = read_gene_order(&dir.join("gene_order.tsv"))?;
    let dropouts = read_dropouts(&dir.join("hyperparameters.json"))?;

    let enc_path = dir.join("encoder.ckpt");
    let enc_ckpt = TorchSave::open(&enc_path)?;
    let enc_sd = enc_ckpt.state_dict()?;
    let enc = parse_network(Part::Encoder, &enc_path, &enc_sd, dropouts)?;
    check_layer_sizes(&dir.join("layer_sizes.json"), &enc_path, &enc_sd)?;
    if enc.layout.in_dim != genes.len() {
        bail!(
            "{}: lists {} genes but {} `{}` takes {} inputs",
            dir.join("gene_order.tsv").display(),
            genes.len(),
            enc_path.display(),
            first_weight_key(Part::Encoder, &enc.layout),
            enc.layout.in_dim
        );
    }
    let latent = enc.layout.out_dim;

    let dec_path = dir.join("decoder.ckpt");
    let dec_ckpt = TorchSave::open(&dec_path)?;
    let dec_sd = dec_ckpt.state_dict()?;
    let dec = parse_network(Part::Decoder, &dec_path, &dec_sd, dropouts)?;
    if dec.layout.in_dim != latent {
        bail!(
            "{}: `{}` takes {} inputs but the encoder's latent size is {}",
            dec_path.display(),
            first_weight_key(Part::Decoder, &dec.layout),
            dec.layout.in_dim,
            latent
        );
    }
    if dec.layout.out_dim != genes.len() {
        bail!(
            "{}: `network.{}.weight` outputs {} genes but gene_order.tsv lists {}",
            dec_path.display(),
            dec.layout.hidden.len(),
            dec.layout.out_dim,
            genes.len()
        );
    }

    let mut tensors = BTreeMap::new();
    copy_tensors(&enc_ckpt, &enc_sd, &enc.map, &mut tensors)?;
    copy_tensors(&dec_ckpt, &dec_sd, &dec.map, &mut tensors)?;

    let arch = format!(
        "encoder {} → {:?} → {} (BatchNorm, PReLU, L2-normalised output); decoder {} → {:?} → {}",
        enc.layout.in_dim, enc.layout.hidden, enc.layout.out_dim, dec.layout.in_dim, dec.layout.hidden, dec.layout.out_dim
    );
    let mut metadata = BTreeMap::new();
    metadata.insert("source".into(), "scimilarity".into());
    metadata.insert("scimilarity.folder".into(), dir.display().to_string());
    metadata.insert("scimilarity.architecture".into(), arch);
    metadata.insert(
        "scimilarity.dropout".into(),
        format!("input_dropout {} dropout {}", dropouts.input_dropout, dropouts.dropout),
    );
    metadata.insert("imported_at".into(), crate::io::fs::now_rfc3339());
    metadata.insert("scdd_version".into(), scdd_core::SCDD_VERSION.into());

    let bundle = GeneratorBundle {
        spec: GraphSpec {
            n_genes: genes.len(),
            latent_dim: latent,
            // SCimilarity embeds log-normalised counts: total 1e4 per cell, then log1p.
            space: ExpressionSpace { target_sum: 1e4, log1p: true },
            encoder: Some(enc.stack),
            decoder: dec.stack,
            denoiser: None,
            schedule: NoiseSchedule::default(),
            task_head: None,
        },
        genes,
        label_column: String::new(),
        classes: Vec::new(),
        tensors,
        metadata,
    };
    bundle.validate().context("the imported bundle does not validate")?;
    Ok(bundle)
}

/// `gene_order.tsv`: one gene per line (SCimilarity strips each line); trailing blank lines are
/// ignored, blank lines inside and duplicates are errors.
pub fn read_gene_order(path: &Path) -> Result<Vec<String>> {
    let bytes = crate::io::fs::read(path)?;
    let text = String::from_utf8(bytes).map_err(|_| err!("{}: not UTF-8 text", path.display()))?;
    let mut genes: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    while genes.last().is_some_and(|g| g.is_empty()) {
        genes.pop();
    }
    if genes.is_empty() {
        bail!("{}: lists no genes", path.display());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, g) in genes.iter().enumerate() {
        if g.is_empty() {
            bail!("{}: line {} is blank", path.display(), i + 1);
        }
        if let Some(first) = seen.insert(g, i) {
            bail!("{}: gene {g:?} appears twice (lines {} and {})", path.display(), first + 1, i + 1);
        }
    }
    Ok(genes)
}

/// `hyperparameters.json` (written by SCimilarity's trainer) if present, else the defaults.
fn read_dropouts(path: &Path) -> Result<Dropouts> {
    let mut d = Dropouts::default();
    if !path.is_file() {
        return Ok(d);
    }
    let v: serde_json::Value = serde_json::from_slice(&crate::io::fs::read(path)?)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let get = |k: &str| -> Result<Option<f32>> {
        match v.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(x) => match x.as_f64() {
                Some(p) if (0.0..1.0).contains(&p) => Ok(Some(p as f32)),
                _ => bail!("{}: `{k}` is {x}, expected a probability in [0, 1)", path.display()),
            },
        }
    };
    if let Some(p) = get("dropout")? {
        d.dropout = p;
    }
    if let Some(p) = get("input_dropout")? {
        d.input_dropout = p;
    }
    Ok(d)
}

/// Every entry of `layer_sizes.json` must be an encoder key with that shape, and every 2-D
/// encoder weight must be listed (SCimilarity derives its layer sizes from those).
fn check_layer_sizes(path: &Path, enc_path: &Path, sd: &[(String, TensorRef)]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(&crate::io::fs::read(path)?)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let obj = v.as_object().ok_or_else(|| err!("{}: expected an object of key → shape", path.display()))?;
    let shapes: HashMap<&str, &Vec<usize>> = sd.iter().map(|(k, t)| (k.as_str(), &t.shape)).collect();
    for (k, s) in obj {
        let listed: Vec<usize> = s
            .as_array()
            .and_then(|a| a.iter().map(|x| x.as_u64().map(|u| u as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| err!("{}: `{k}` is {s}, expected a list of sizes", path.display()))?;
        match shapes.get(k.as_str()) {
            None => bail!("{}: lists `{k}`, which {} does not have", path.display(), enc_path.display()),
            Some(&actual) if *actual != listed => bail!(
                "{}: `{k}` is {listed:?} but {} has shape {actual:?}",
                path.display(),
                enc_path.display()
            ),
            _ => {}
        }
    }
    for (k, t) in sd {
        if k.ends_with(".weight") && t.shape.len() > 1 && !obj.contains_key(k) {
            bail!("{}: does not list `{k}` of {}", path.display(), enc_path.display());
        }
    }
    Ok(())
}

fn first_weight_key(part: Part, l: &Layout) -> String {
    if l.hidden.is_empty() {
        "network.0.weight".into()
    } else {
        format!("network.0.{}.weight", part.linear_at(0))
    }
}

/// Recognises SCimilarity's network in a state dict, checks every key and shape, and builds the
/// matching scdd stack with the key mapping.
fn parse_network(part: Part, path: &Path, sd: &[(String, TensorRef)], dropouts: Dropouts) -> Result<Network> {
    let file = path.display().to_string();
    let shapes: HashMap<&str, &Vec<usize>> = sd.iter().map(|(k, t)| (k.as_str(), &t.shape)).collect();
    if sd.is_empty() {
        bail!("{file}: the state_dict is empty");
    }
    // Block indices: every key must be `network.<i>.…`.
    let mut n = 0usize;
    for (k, _) in sd {
        let i = k
            .strip_prefix("network.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .ok_or_else(|| {
                err!("{file}: unexpected key `{k}` (SCimilarity {} keys start with `network.<index>.`)", part.name())
            })?;
        n = n.max(i);
    }
    let need = |key: &str, what: &str| -> Result<&Vec<usize>> {
        shapes.get(key).copied().ok_or_else(|| err!("{file}: missing key `{key}` ({what})"))
    };
    let rank = |key: &str, s: &Vec<usize>, r: usize| -> Result<()> {
        if s.len() != r {
            bail!("{file}: `{key}` has shape {s:?}, expected a {r}-d tensor");
        }
        Ok(())
    };

    // Read the widths off the Linear weights.
    let mut hidden = Vec::new();
    let mut prelu = Vec::new();
    let mut in_dim = None;
    for i in 0..n {
        let o = part.linear_at(i);
        let what = format!("block {i} of the {} is {}", part.name(), part.describe_block(i));
        let wk = format!("network.{i}.{o}.weight");
        let w = need(&wk, &what)?;
        rank(&wk, w, 2)?;
        in_dim.get_or_insert(w[1]);
        hidden.push(w[0]);
        let pk = format!("network.{i}.{}.weight", o + 2);
        let p = need(&pk, &what)?;
        rank(&pk, p, 1)?;
        prelu.push(p[0]);
    }
    let fk = format!("network.{n}.weight");
    let fw = need(&fk, &format!("the {}'s final Linear layer", part.name()))?;
    rank(&fk, fw, 2)?;
    let in_dim = in_dim.unwrap_or(fw[1]);
    let layout = Layout { in_dim, hidden: hidden.clone(), out_dim: fw[0], prelu: prelu.clone() };

    // The scdd layer list and the expected key → (name, shape) mapping.
    let prefix = part.name();
    let mut layers = Vec::new();
    let mut map = Vec::new();
    let mut optional = Vec::new(); // num_batches_tracked
    let mut d = in_dim;
    let add = |layers: &mut Vec<Layer>, map: &mut Vec<Mapped>, layer: Layer, ckpt_prefix: String| {
        let k = layers.len();
        for (p, shape) in layer.params() {
            map.push(Mapped { ckpt_key: format!("{ckpt_prefix}.{p}"), scdd_name: layer_param(prefix, k, p), shape });
        }
        layers.push(layer);
    };
    for (i, &h) in hidden.iter().enumerate() {
        let o = part.linear_at(i);
        if o == 1 {
            let p = if part == Part::Encoder && i == 0 { dropouts.input_dropout } else { dropouts.dropout };
            add(&mut layers, &mut map, Layer::Dropout { p }, format!("network.{i}.0"));
        }
        add(&mut layers, &mut map, Layer::Linear { in_dim: d, out_dim: h, bias: true }, format!("network.{i}.{o}"));
        add(&mut layers, &mut map, Layer::BatchNorm1d { dim: h, eps: BN_EPS }, format!("network.{i}.{}", o + 1));
        optional.push(format!("network.{i}.{}.num_batches_tracked", o + 1));
        add(&mut layers, &mut map, Layer::PRelu { num_parameters: prelu[i] }, format!("network.{i}.{}", o + 2));
        d = h;
    }
    add(&mut layers, &mut map, Layer::Linear { in_dim: d, out_dim: layout.out_dim, bias: true }, format!("network.{n}"));
    if part == Part::Encoder {
        layers.push(Layer::L2Normalize { eps: L2_EPS });
    }
    let stack = Stack { prefix: prefix.to_string(), layers };

    // Every expected key present with its shape; nothing else.
    for m in &map {
        let s = need(&m.ckpt_key, &format!("expected for a SCimilarity {} with hidden sizes {hidden:?}", part.name()))?;
        if *s != m.shape {
            bail!(
                "{file}: `{}` has shape {s:?}, expected {:?} (SCimilarity {} {} → {hidden:?} → {})",
                m.ckpt_key,
                m.shape,
                part.name(),
                layout.in_dim,
                layout.out_dim
            );
        }
    }
    for (k, _) in sd {
        if !map.iter().any(|m| &m.ckpt_key == k) && !optional.contains(k) {
            bail!(
                "{file}: unexpected key `{k}` for a SCimilarity {} with hidden sizes {hidden:?} ({}; modified \
                 models are not supported)",
                part.name(),
                part.describe()
            );
        }
    }
    stack.validate().with_context(|| format!("{file}: the {} does not chain", part.name()))?;
    Ok(Network { layout, stack, map })
}

fn copy_tensors(
    ck: &TorchSave,
    sd: &[(String, TensorRef)],
    map: &[Mapped],
    out: &mut BTreeMap<String, Tensor>,
) -> Result<()> {
    let refs: HashMap<&str, &TensorRef> = sd.iter().map(|(k, t)| (k.as_str(), t)).collect();
    for m in map {
        let t = refs[m.ckpt_key.as_str()];
        let v = ck.read_f32(&m.ckpt_key, t)?;
        if let Some(bad) = v.iter().find(|x| !x.is_finite()) {
            bail!("{}: `{}` contains a non-finite value ({bad})", ck.path.display(), m.ckpt_key);
        }
        if m.ckpt_key.ends_with(".running_var") && v.iter().any(|&x| x < 0.0) {
            bail!("{}: `{}` has a negative variance", ck.path.display(), m.ckpt_key);
        }
        out.insert(m.scdd_name.clone(), Tensor::from_f32(m.shape.clone(), &v)?);
    }
    Ok(())
}

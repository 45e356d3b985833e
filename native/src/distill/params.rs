//! What a distillation run is asked to do: the method and its settings, as `scdd distill`'s
//! flags and the pipeline's `[distill]` section give them.
use crate::error::Result;
use crate::params::{self, Check};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    #[serde(rename = "dm")]
    Dm,
    #[serde(rename = "dc")]
    Dc,
    #[serde(rename = "dm+dc")]
    DmDc,
    #[serde(rename = "none")]
    None,
    #[serde(rename = "random")]
    Random,
    #[serde(rename = "class-mean")]
    ClassMean,
    #[serde(rename = "dm-data")]
    DmData,
    #[serde(rename = "dc-data")]
    DcData,
}

impl Method {
    pub const ALL: [Method; 8] =
        [Method::Dm, Method::Dc, Method::DmDc, Method::None, Method::Random, Method::ClassMean, Method::DmData, Method::DcData];

    pub fn name(self) -> &'static str {
        match self {
            Method::Dm => "dm",
            Method::Dc => "dc",
            Method::DmDc => "dm+dc",
            Method::None => "none",
            Method::Random => "random",
            Method::ClassMean => "class-mean",
            Method::DmData => "dm-data",
            Method::DcData => "dc-data",
        }
    }
    /// Writes latent codes (`.scdd`) rather than cells (`.h5ad`).
    pub fn produces_codes(self) -> bool {
        matches!(self, Method::Dm | Method::Dc | Method::DmDc | Method::None)
    }
    pub fn uses_dm(self) -> bool {
        matches!(self, Method::Dm | Method::DmDc | Method::DmData)
    }
    pub fn uses_dc(self) -> bool {
        matches!(self, Method::Dc | Method::DmDc | Method::DcData)
    }
    /// Runs the matching loop (rather than writing its starting point or a baseline).
    pub fn optimises(self) -> bool {
        self.uses_dm() || self.uses_dc()
    }
    /// Needs the bundle's encoder (every method but the cell baselines).
    pub fn needs_encoder(self) -> bool {
        !matches!(self, Method::Random | Method::ClassMean)
    }
    /// The output file's extension.
    pub fn extension(self) -> &'static str {
        if self.produces_codes() {
            "scdd"
        } else {
            "h5ad"
        }
    }
    /// scDD proper (latent codes, matched), as opposed to its starting point and the baselines.
    pub fn is_scdd(self) -> bool {
        matches!(self, Method::Dm | Method::Dc | Method::DmDc)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        Method::ALL.iter().copied().find(|m| m.name() == t).ok_or_else(|| {
            let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
            format!("unknown method {s:?}; choose from {}", names.join(", "))
        })
    }
}

/// Where the codes start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// SPC random real cells of each class, encoded (the paper's Algorithm 1).
    Random,
    /// The centroids of SPC k-means clusters of each class's encoder features (one cluster:
    /// the class's mean feature), each scaled to its members' mean norm.
    Kmeans,
}

impl Init {
    pub fn name(self) -> &'static str {
        match self {
            Init::Random => "random",
            Init::Kmeans => "kmeans",
        }
    }
}

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        [Init::Random, Init::Kmeans].into_iter().find(|i| i.name() == s.trim()).ok_or_else(|| format!("unknown init {s:?}; choose from random, kmeans"))
    }
}

/// Distillation settings. Defaults are the ones `scdd distill` uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillParams {
    pub method: Method,
    /// Synthetic cells per class.
    pub spc: usize,
    /// Optimisation steps K.
    pub steps: usize,
    /// Adam step size relative to the RMS of the initial values.
    pub lr: f64,
    /// Diffusion timestep t of the codes.
    pub timestep: u32,
    pub seed: u64,
    /// Real cells per class whose features give DC's real gradient each step.
    pub real_batch: usize,
    /// A fresh task head every this many steps (DC).
    pub head_reset: usize,
    /// SGD steps of the task head on the synthetic set after each step (DC).
    pub head_steps: usize,
    pub head_lr: f64,
    /// Where latent codes start (`none`, `dm`, `dc`, `dm+dc`).
    pub init: Init,
    /// Weight of gene-space matching, relative to DM/DC (each term is divided by its value at
    /// step 0): each decoded cell against the mean log-normalised cell of the real cluster it
    /// stands for (k-means clusters of each class's encoder features, SPC of them or one per 10
    /// cells if fewer; at SPC 1 the class mean), made a valid cell like the decoded ones, so the
    /// set becomes a k-means quantisation of each class in gene space. The default (1000) lets
    /// this term lead and DM/DC refine: lower weights let DM/DC pull the cells of similar
    /// classes apart in feature space at the cost of the gene-space classifiers (native/README.md,
    /// "How the defaults were chosen"). 0: off.
    /// Latent-code methods only (`dm-data` and `dc-data` stay the paper's baselines).
    pub gene_weight: f64,
    /// Weight of the KIP term (kernel inducing points with a linear kernel, Nguyen et al. 2021),
    /// relative to DM/DC like the gene term: ridge regression with an intercept, fit on the
    /// decoded cells and their one-hot labels, must predict the labels of a fixed sample of real
    /// cells (up to `real_batch` per class, fewer when cells × genes would pass 2^25), squared
    /// error. It is the gene-space classifier the recipients train, solved in closed form, so the
    /// cells move from the cluster means towards what such a classifier needs at the class
    /// boundaries. 0: off. Latent-code methods only.
    #[serde(default = "default_kip_weight")]
    pub kip_weight: f64,
    /// The KIP term's ridge, as a fraction of the mean squared norm of the centred decoded cells.
    #[serde(default = "default_kip_ridge")]
    pub kip_ridge: f64,
}

fn default_kip_weight() -> f64 {
    DistillParams::default().kip_weight
}

fn default_kip_ridge() -> f64 {
    DistillParams::default().kip_ridge
}

impl Default for DistillParams {
    fn default() -> Self {
        DistillParams {
            method: Method::DmDc,
            spc: 1,
            steps: 200,
            lr: 0.1,
            timestep: 50,
            seed: 0,
            real_batch: 256,
            head_reset: 10,
            head_steps: 5,
            head_lr: 0.1,
            // Both chosen on pancreas, human_kidney and pbmc68k_reduced by the gene-space
            // evaluators (native/README.md, "How the defaults were chosen").
            init: Init::Kmeans,
            gene_weight: 1000.0,
            // Chosen on the five datasets of ../shared/data by the gene-space evaluators, flat
            // over weights 1000–10000 and ridges 0.001–0.1 (native/README.md).
            kip_weight: 1000.0,
            kip_ridge: 0.1,
        }
    }
}

/// The most synthetic cells per class a run may ask for (a memory check sizes the run too).
pub const MAX_SPC: usize = 100_000;

impl Check for DistillParams {
    fn validate(&self) -> Result<()> {
        params::count("--spc", self.spc as u64, 1, MAX_SPC as u64)?;
        params::count("--steps", self.steps as u64, 0, 10_000_000)?;
        params::positive("--lr", self.lr)?;
        params::count("--timestep", self.timestep as u64, 0, 100_000)?;
        params::count("--real-batch", self.real_batch as u64, 1, 1 << 20)?;
        params::count("--head-reset", self.head_reset as u64, 1, 10_000_000)?;
        params::count("--head-steps", self.head_steps as u64, 0, 10_000)?;
        params::positive("--head-lr", self.head_lr)?;
        params::non_negative("--gene-weight", self.gene_weight)?;
        params::non_negative("--kip-weight", self.kip_weight)?;
        params::closed("--kip-ridge", self.kip_ridge, 1e-6, 1e3)?;
        Ok(())
    }
}

impl DistillParams {
    /// The settings this method actually uses (the rest reset to defaults), so that, e.g., a
    /// baseline's cache key does not change with the number of optimisation steps.
    pub fn relevant(&self) -> DistillParams {
        let d = DistillParams::default();
        let mut c = self.clone();
        if !c.method.optimises() {
            c.steps = 0;
            c.lr = d.lr;
        }
        if !c.method.uses_dc() {
            c.real_batch = d.real_batch;
            c.head_reset = d.head_reset;
            c.head_steps = d.head_steps;
            c.head_lr = d.head_lr;
        }
        if !c.method.produces_codes() {
            c.timestep = d.timestep;
            c.init = d.init;
        }
        if !(c.method.optimises() && c.method.produces_codes()) {
            c.gene_weight = d.gene_weight;
            c.kip_weight = d.kip_weight;
            c.kip_ridge = d.kip_ridge;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn methods_parse_by_name_and_serialise_as_names() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{}\"", m.name()));
        }
        assert!("dn".parse::<Method>().unwrap_err().contains("choose from dm, dc, dm+dc"));
    }

    #[test]
    fn ranges_are_checked() {
        assert!(DistillParams::default().check().is_ok());
        for bad in [
            DistillParams { lr: f64::INFINITY, ..Default::default() },
            DistillParams { lr: 0.0, ..Default::default() },
            DistillParams { real_batch: 0, ..Default::default() },
            DistillParams { spc: 0, ..Default::default() },
            DistillParams { spc: MAX_SPC + 1, ..Default::default() },
            DistillParams { head_lr: f64::NAN, ..Default::default() },
            DistillParams { kip_weight: -1.0, ..Default::default() },
            DistillParams { kip_ridge: 0.0, ..Default::default() },
            DistillParams { kip_ridge: 1e4, ..Default::default() },
        ] {
            let e = bad.check().unwrap_err();
            assert!(matches!(e, Error::Param { .. }), "{e}");
        }
    }

    #[test]
    fn baselines_ignore_steps() {
        let mut c = DistillParams { method: Method::Random, steps: 5, ..Default::default() };
        let a = c.relevant();
        c.steps = 50;
        assert_eq!(c.relevant(), a);
        c.method = Method::Dm;
        let b = c.relevant();
        c.steps = 5;
        assert_ne!(c.relevant(), b);
    }
}

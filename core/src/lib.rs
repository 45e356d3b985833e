//! scdd-core: everything scdd's native CLI, browser build and plugins share.
//!
//! * [`matrix`], [`obs`], [`dataset`] — the data model: a sparse CSR expression matrix with
//!   gene names and an observation table (categorical and numeric columns).
//! * [`preprocess`] — QC filters, normalisation, log1p, gene alignment, stratified split.
//! * [`graph`] — the typed distillation graph: encoder, denoiser, decoder, class embedding,
//!   task head and noise schedule, enough for a second implementation to run it.
//! * [`format`], [`codes`], [`bundle`] — versioned, checksummed `.scdd` latent-code files and
//!   `.scddg` generator bundles.
//! * [`metrics`] — accuracy, macro-F1, confusion matrices, MMD, correlations.
//! * [`explore`] — a PCA projection and the top genes of each class, for plots.
//!
//! No tch, hdf5, wgpu or threads: this crate builds for `wasm32-unknown-unknown`.
pub mod bundle;
pub mod codes;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod explore;
pub mod format;
pub mod graph;
pub mod matrix;
pub mod metrics;
pub mod obs;
pub mod preprocess;
pub mod reference;
pub mod tensor;

pub use error::{CoreError, Result};

/// The scdd version written into every file's provenance.
pub const SCDD_VERSION: &str = env!("CARGO_PKG_VERSION");

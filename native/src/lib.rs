//! The `scdd` library behind the CLI. Layers, top to bottom (a module imports only from the
//! layers below it; `tests/architecture.rs` checks this):
//!
//! ```text
//! cmd/                      flags → checked parameters → one library call → print (clap lives only here)
//! pipeline/  report/  bench/
//! split  foundation/  generator/  distill/  evaluate/  synthetic  import/
//! train/  nn/
//! io/
//! scdd-core
//! ```
pub mod cmd;

pub mod bench;
pub mod pipeline;
pub mod report;

pub mod distill;
pub mod evaluate;
pub mod foundation;
pub mod generator;
pub mod import;
pub mod split;
pub mod synthetic;

pub mod nn;
pub mod train;

pub mod io;

pub mod error;
pub mod params;
pub use error::{Error, Result};

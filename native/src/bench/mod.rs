//! `scdd bench`: benchmarks that print a table and write JSON — [`io`] (read + QC + normalise
//! against anndata/scanpy), [`train`] (trainer throughput), [`distill`] (distillation steps/s).
pub mod distill;
pub mod io;
pub mod train;

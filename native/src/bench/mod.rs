//! `scdd bench`: benchmarks that print a table and write JSON — [`io`] (read + QC + normalise
//! against anndata/scanpy), [`train`] (trainer throughput), [`distill`] (distillation steps/s),
//! [`torch`] (the training and distillation loops against a compact PyTorch implementation).
pub mod distill;
pub mod io;
pub mod torch;
pub mod train;

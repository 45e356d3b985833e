//! The `scdd` library behind the CLI: `.h5ad` I/O, training and distillation with tch,
//! evaluation and reports. `cmd` holds one module per subcommand.
pub mod bench_distill;
pub mod bench_io;
pub mod bench_train;
pub mod cmd;
pub mod evaluation;
pub mod fsutil;
pub mod h5ad;
pub mod prep;
pub mod scimilarity;
pub mod device;
pub mod distill;
pub mod nn;
pub mod rng;
pub mod checkpoint;
pub mod optim;
pub mod train;
pub mod foundation;
pub mod generator;
pub mod pipeline;
pub mod plot;
pub mod report;

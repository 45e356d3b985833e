//! The `scdd` library behind the CLI: `.h5ad` I/O, training and distillation with tch,
//! evaluation and reports. `cmd` holds one module per subcommand.
pub mod bench_io;
pub mod bench_train;
pub mod cmd;
pub mod evaluation;
pub mod fsutil;
pub mod h5ad;
pub mod prep;
pub mod scimilarity;
pub mod checkpoint;
pub mod device;
pub mod foundation;
pub mod generator;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod train;

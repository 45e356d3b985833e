//! One module per subcommand: its clap `Args` and `run`.
pub mod bench;
pub mod decode;
pub mod distill;
pub mod evaluate;
pub mod generate;
pub mod import_scimilarity;
pub mod inspect;
pub mod run;
pub mod split;
pub mod train_foundation;
pub mod train_generator;

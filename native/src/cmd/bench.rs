//! `scdd bench`: benchmarks that print a table (`io`, `train`, `distill`).
use clap::Subcommand;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: BenchCmd,
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Read + QC + normalize_total + log1p of a generated 100k × 20k .h5ad: scdd against
    /// anndata + scanpy (time, peak memory, equal values).
    Io(crate::bench_io::IoArgs),
    /// Training throughput of the foundation model and SCDG at default sizes on pbmc3k-sized
    /// data, CPU and CUDA (steps/s, time per epoch, peak memory).
    Train(crate::bench_train::Args),
    /// Distillation steps/s and peak memory at SPC 1 and 10, and with the dataset grown 10×.
    Distill(crate::bench_distill::Args),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        BenchCmd::Io(a) => crate::bench_io::run(a),
        BenchCmd::Train(a) => crate::bench_train::run(a),
        BenchCmd::Distill(a) => crate::bench_distill::run(a),
    }
}

//! `scdd bench`: benchmarks that print a table (`io`; `train` and others are being written).
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        BenchCmd::Io(a) => crate::bench_io::run(a),
        BenchCmd::Train(a) => crate::bench_train::run(a),
    }
}

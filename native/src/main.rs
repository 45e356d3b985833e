use clap::{Parser, Subcommand};
use scdd::cmd;
use std::process::ExitCode;

/// scdd — distil labelled single-cell RNA-seq datasets into a few latent codes per class.
#[derive(Parser)]
#[command(name = "scdd", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Shape, sparsity, count type, obs columns and genes of an .h5ad file.
    Inspect(cmd::inspect::Args),
    /// QC + stratified train/test split into DIR/train.h5ad, DIR/test.h5ad, DIR/split.json.
    Split(cmd::split::Args),
    /// Train the foundation autoencoder (encoder + decoder) on log-normalised cells.
    TrainFoundation(cmd::train_foundation::Args),
    /// Import a SCimilarity-format model folder as a foundation bundle.
    ImportScimilarity(cmd::import_scimilarity::Args),
    /// Train the single-step conditional diffusion generator (SCDG) in the foundation's latent space.
    TrainGenerator(cmd::train_generator::Args),
    /// Sample new cells of a class from the generator.
    Generate(cmd::generate::Args),
    /// Distil a dataset into latent codes (DM / DC matching) or run a baseline.
    Distill(cmd::distill::Args),
    /// Decode a latent-code file into a synthetic .h5ad.
    Decode(cmd::decode::Args),
    /// Train evaluators on a synthetic set and test them on real cells.
    Evaluate(cmd::evaluate::Args),
    /// The whole pipeline from a config file: split → train → distill → evaluate → report.
    Run(cmd::run::Args),
    /// Benchmarks that print a table (io, train, distill).
    Bench(cmd::bench::Args),
    /// Evaluator plugins found (SCDD_PLUGIN_PATH, the built-in folder, named files) and why any was refused.
    Plugins(cmd::plugins::Args),
    /// A decoder-only copy of a generator bundle for recipients of latent codes (optionally f16).
    RecipientBundle(cmd::recipient_bundle::Args),
    /// Serve the browser page (decode codes and train classifiers on WebGPU) on 127.0.0.1.
    Serve(cmd::serve::Args),
    /// Internal: runs one plugin fit + predict in its own process (started by scdd itself).
    #[command(hide = true)]
    PluginWorker(cmd::plugin_worker::Args),
}

/// Exit status: 0 the result is written and good; 1 an error (one line on stderr); 2 bad
/// command-line syntax (clap); 3 stopped on purpose by `--stop-after`, checkpoint written,
/// continue with `--resume`.
fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Inspect(a) => cmd::inspect::run(a),
        Cmd::Split(a) => cmd::split::run(a),
        Cmd::TrainFoundation(a) => cmd::train_foundation::run(a),
        Cmd::ImportScimilarity(a) => cmd::import_scimilarity::run(a),
        Cmd::TrainGenerator(a) => cmd::train_generator::run(a),
        Cmd::Generate(a) => cmd::generate::run(a),
        Cmd::Distill(a) => cmd::distill::run(a),
        Cmd::Decode(a) => cmd::decode::run(a),
        Cmd::Evaluate(a) => cmd::evaluate::run(a),
        Cmd::Run(a) => cmd::run::run(a),
        Cmd::Bench(a) => cmd::bench::run(a),
        Cmd::Plugins(a) => cmd::plugins::run(a),
        Cmd::RecipientBundle(a) => cmd::recipient_bundle::run(a),
        Cmd::Serve(a) => cmd::serve::run(a),
        Cmd::PluginWorker(a) => cmd::plugin_worker::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the context chain joined by ": ".
            let msg = format!("{e:#}").replace('\n', " ");
            let interrupted = e.chain().any(|c| matches!(c.downcast_ref::<scdd::Error>().map(|x| x.root()), Some(scdd::Error::Interrupted { .. })));
            if interrupted {
                // Stopped on purpose (--stop-after) with a checkpoint: not a failure, not a result.
                eprintln!("{msg}");
                return ExitCode::from(3);
            }
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

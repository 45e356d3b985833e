//! Bad parameters and bad outputs through the real `scdd` binary: each is refused before any
//! work with one line naming the flag (or file) and the value, exit status 1, and nothing left
//! behind — no output, no temporary file, no checkpoint. `--stop-after` exits 3 in every
//! command, and `--resume` refuses a checkpoint of other inputs, naming what changed.
mod common;

use scdd::io::h5ad::{read_h5ad, write_h5ad, ReadOptions};
use std::path::{Path, PathBuf};
use std::process::Output;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/pancreas_endocrinogenesis_e15_2k_genes_SuperCell.h5ad");

/// A training file (every 8th pancreas cell) and a small random generator bundle for it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ds = read_h5ad(Path::new(DATA), &ReadOptions::default()).unwrap();
        let rows: Vec<usize> = (0..ds.n_cells()).step_by(8).collect();
        let train = dir.path().join("train.h5ad");
        write_h5ad(&train, &ds.select_cells(&rows), &Default::default()).unwrap();
        let b = common::random_generator(&ds, 8, 16, 1);
        let gen = dir.path().join("gen.scddg");
        std::fs::write(&gen, b.to_bytes()).unwrap();
        Fixture { dir }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_str().unwrap().to_string()
    }
    /// The files in the fixture's directory, hidden ones (temporaries, work dirs) included.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(self.dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs scdd and checks the refusal contract: exit 1, one `error:` line holding every needle,
/// no panic, and no file added to the fixture's directory.
fn refused(f: &Fixture, args: &[&str], env: &[(&str, &str)], needles: &[&str]) -> String {
    let before = f.files();
    let o = common::scdd_env(args, env);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "scdd {args:?}: exit {:?}, stderr {err}", o.status.code());
    assert!(!err.contains("panicked"), "scdd {args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "scdd {args:?}: not one error line: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "scdd {args:?}: {n:?} missing from {err}");
    }
    assert_eq!(f.files(), before, "scdd {args:?} left files behind");
    err
}

#[test]
fn numeric_flags_out_of_range_are_refused_before_any_work() {
    let f = Fixture::new();
    let (t, g) = (f.s("train.h5ad"), f.s("gen.scddg"));
    let distill = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["distill", &t, "-g", &g, "--out", &f.s("c.scdd"), "--steps", "2", "--device", "cpu", "--quiet"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (extra, needle) in [
        (&["--lr", "inf"][..], "--lr inf"),
        (&["--lr", "0"][..], "--lr 0"),
        (&["--real-batch", "0"][..], "--real-batch 0"),
        (&["--spc", "0"][..], "--spc 0"),
        (&["--spc", "100001"][..], "--spc 100001"),
        (&["--timestep", "5000"][..], "--timestep 5000"),
    ] {
        let a = distill(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        refused(&f, &a, &[], &[needle]);
    }
    let fnd = f.s("f.scddg");
    for (lr, needle) in [("-1", "--lr -1"), ("0", "--lr 0"), ("nan", "--lr NaN")] {
        let lr = format!("--lr={lr}");
        refused(&f, &["train-generator", &t, "--foundation", &g, "--label", "cell_type", "--out", &fnd, &lr], &[], &[needle]);
        refused(&f, &["train-foundation", &t, "--out", &fnd, &lr], &[], &[needle]);
    }
    refused(&f, &["train-foundation", &t, "--out", &fnd, "--epochs", "0"], &[], &["--epochs 0"]);
    // in range but diverging: the loss turns non-finite and the run stops, naming the flag
    refused(
        &f,
        &["train-foundation", &t, "--out", &fnd, "--lr", "1e30", "--epochs", "1", "--hidden", "16", "--latent-dim", "4", "--quiet", "--device", "cpu"],
        &[],
        &["train-foundation: the loss became", "lower --lr"],
    );
    refused(&f, &["train-foundation", &t, "--out", &fnd, "--stop-after", "0"], &[], &["--stop-after 0"]);
    for (extra, needle) in [
        (&["--lr", "nan"][..], "--lr NaN"),
        (&["--repeats", "0"][..], "--repeats 0"),
        (&["--steps", "0"][..], "--steps 0"),
        (&["--evaluators", "lr,svm"][..], "unknown evaluator 'svm'"),
        (&["--evaluators", "lr,lr"][..], "'lr' given twice"),
    ] {
        let mut a = vec!["evaluate", &t, "--test", &t, "-m", &g];
        a.extend_from_slice(extra);
        refused(&f, &a, &[], &[needle]);
    }
    for (extra, needle) in [(&["--min-value", "nan"][..], "--min-value NaN"), (&["-n", "0"][..], "-n 0"), (&["--min-value=-1"][..], "--min-value -1")] {
        let out = f.s("x.h5ad");
        let mut a: Vec<String> = ["generate", &g, "--class", "all", "--out", &out].iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        refused(&f, &a, &[], &[needle]);
    }
    refused(&f, &["split", &t, "--label", "cell_type", "--out", &f.s("sp"), "--min-counts", "nan"], &[], &["--min-counts NaN"]);
}

#[test]
fn work_that_cannot_fit_in_memory_is_refused_with_the_figure() {
    let f = Fixture::new();
    let (t, g) = (f.s("train.h5ad"), f.s("gen.scddg"));
    let budget = [("SCDD_MEMORY_BUDGET_MB", "500")];
    let e = refused(
        &f,
        &["distill", &t, "-g", &g, "--out", &f.s("c.scdd"), "--spc", "100000", "--device", "cpu", "--quiet"],
        &budget,
        &["--spc 100000", "MB", "500 MB budget", "lower --spc"],
    );
    assert!(e.contains("needs about"), "{e}");
    refused(
        &f,
        &["generate", &g, "--class", "all", "-n", "10000000", "--out", &f.s("x.h5ad")],
        &budget,
        &["-n 10000000", "500 MB budget", "lower -n"],
    );
    // An SPC above a class's cell count runs, with a warning naming the class.
    let o = common::scdd(&["distill", &t, "-g", &g, "--out", &f.s("ok.h5ad"), "--method", "random", "--spc", "40", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: --spc 40 exceeds the cells of"), "{}", stderr(&o));
}

#[test]
fn outputs_never_overwrite_inputs_and_must_fit_what_is_written() {
    let f = Fixture::new();
    let (t, g) = (f.s("train.h5ad"), f.s("gen.scddg"));
    // codes to decode
    let codes = f.s("c.scdd");
    let o = common::scdd(&["distill", &t, "-g", &g, "--out", &codes, "--method", "none", "--device", "cpu", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(&codes).unwrap();
    refused(&f, &["decode", &codes, "-g", &g, "--out", &codes], &[], &[&codes, "--out must end in .h5ad"]);
    refused(&f, &["distill", &t, "-g", &g, "--method", "random", "--out", &t], &[], &[&t, "is the input file"]);
    refused(&f, &["distill", &t, "-g", &g, "--method", "dm", "--out", &f.s("x.h5ad")], &[], &["--out must end in .scdd"]);
    refused(&f, &["train-foundation", &t, "--out", &t], &[], &[&t, "--out must end in .scddg"]);
    refused(&f, &["split", &t, "--label", "cell_type", "--out", f.dir.path().to_str().unwrap()], &[], &["would overwrite the input", "train.h5ad"]);
    assert_eq!(std::fs::read(&codes).unwrap(), before, "the input is untouched");
    // an --out that is an existing directory is refused before the work, leaving no temporary
    std::fs::create_dir(f.p("d.scdd")).unwrap();
    refused(&f, &["distill", &t, "-g", &g, "--method", "dm", "--steps", "3", "--out", &f.s("d.scdd"), "--quiet"], &[], &["is an existing directory"]);
    refused(&f, &["train-foundation", &t, "--out", &f.s("d.scdd")], &[], &["--out must end in .scddg"]);
    std::fs::create_dir(f.p("d.scddg")).unwrap();
    refused(&f, &["train-foundation", &t, "--out", &f.s("d.scddg")], &[], &["is an existing directory"]);
}

#[test]
fn stop_after_exits_3_everywhere_and_resume_checks_its_inputs() {
    let f = Fixture::new();
    let (t, g) = (f.s("train.h5ad"), f.s("gen.scddg"));
    let out = f.s("c.scdd");
    let args = ["distill", &t, "-g", &g, "--out", &out, "--method", "dm+dc", "--steps", "6", "--device", "cpu", "--quiet"];
    let o = common::scdd(&[&args[..], &["--stop-after", "3"]].concat());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("stopped after step 3") && stderr(&o).contains("--resume"), "{}", stderr(&o));
    assert!(!f.p("c.scdd").exists() && f.p("c.scdd.ckpt").exists());
    let fo = f.s("f.scddg");
    let o = common::scdd(&["train-foundation", &t, "--out", &fo, "--hidden", "8", "--latent-dim", "4", "--epochs", "1", "--stop-after", "2", "--quiet", "--device", "cpu"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(f.p("f.scddg.ckpt").exists() && !f.p("f.scddg").exists());
    // the foundation checkpoint is refused by distill's loop, naming both kinds
    std::fs::copy(f.p("f.scddg.ckpt"), f.p("c.scdd.ckpt")).unwrap();
    refused(&f, &[&args[..], &["--resume"]].concat(), &[], &["checkpoint of `scdd train-foundation`, not of `scdd distill`"]);
    std::fs::remove_file(f.p("c.scdd.ckpt")).unwrap();
    let o = common::scdd(&[&args[..], &["--stop-after", "3"]].concat());
    assert_eq!(o.status.code(), Some(3));
    // changed data under the same name: the resume is refused, naming what changed
    let ds = read_h5ad(&f.p("train.h5ad"), &ReadOptions::default()).unwrap();
    let rows: Vec<usize> = (1..ds.n_cells()).collect();
    write_h5ad(&f.p("train.h5ad"), &ds.select_cells(&rows), &Default::default()).unwrap();
    refused(&f, &[&args[..], &["--resume"]].concat(), &[], &["training data was", "and is now"]);
    // --resume without a checkpoint: the same error in every command
    std::fs::remove_file(f.p("c.scdd.ckpt")).unwrap();
    refused(&f, &[&args[..], &["--resume"]].concat(), &[], &["c.scdd.ckpt", "no checkpoint here"]);
    std::fs::remove_file(f.p("f.scddg.ckpt")).unwrap();
    refused(&f, &["train-foundation", &t, "--out", &fo, "--resume"], &[], &["f.scddg.ckpt", "no checkpoint here"]);
    refused(
        &f,
        &["train-generator", &t, "--foundation", &g, "--label", "cell_type", "--out", &f.s("g2.scddg"), "--resume"],
        &[],
        &["g2.scddg.ckpt", "no checkpoint here"],
    );
}

#[test]
fn unwritable_scratch_space_and_config_conflicts_are_named() {
    let f = Fixture::new();
    let (t, g) = (f.s("train.h5ad"), f.s("gen.scddg"));
    // a --work-dir under a file: the error names the path
    let under = format!("{t}/scratch");
    refused(&f, &["distill", &t, "-g", &g, "--out", &f.s("c.scdd"), "--steps", "2", "--work-dir", &under, "--quiet"], &[], &[&under]);
    // `scdd run` refuses a distillation timestep beyond the generator's T before training anything
    let cfg = f.p("run.toml");
    std::fs::write(
        &cfg,
        format!(
            "out_dir = \"{}\"\n[[dataset]]\nname = \"x\"\npath = \"{t}\"\nlabel = \"cell_type\"\n[generator]\ntimesteps = 40\n[distill]\ntimestep = 50\n",
            f.s("run-out")
        ),
    )
    .unwrap();
    let before = f.files();
    let o = common::scdd(&["run", cfg.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("timestep = 50 is beyond the generator's 40 diffusion steps"), "{err}");
    assert_eq!(f.files(), before, "nothing ran");
}

//! The plugin host, discovery half: where evaluator plugins are looked for and whether each is
//! one scdd can call. A plugin is a shared library exporting `scdd_plugin_descriptor`
//! (`scdd-plugin-api`); its descriptor is checked — magic, ABI version, size — before any other
//! call. Running plugins (a worker subprocess per fit/predict) builds on this.
//!
//! Search order: paths named explicitly, then each directory of `SCDD_PLUGIN_PATH` (the
//! platform's path-list syntax), then `plugins/` next to the `scdd` binary (the built-in
//! folder), then the binary's own directory for `libscdd_plugin_*` (the workspace's plugins as
//! cargo builds them). A directory contributes every file with the platform's shared-library
//! extension.

use scdd_plugin_api::{check_descriptor, PluginInfo, ScddDescriptorFn, ScddPluginDescriptor, DESCRIPTOR_SYMBOL};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The environment variable listing plugin directories.
pub const PLUGIN_PATH_VAR: &str = "SCDD_PLUGIN_PATH";

/// Where a candidate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Named on the command line or in the config.
    Path,
    /// A directory of `SCDD_PLUGIN_PATH`.
    EnvPath,
    /// The `plugins/` folder next to the binary.
    BuiltIn,
}

/// One candidate and the verdict on it.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    pub path: PathBuf,
    pub origin: Origin,
    /// The descriptor when accepted.
    pub info: Option<Info>,
    /// Why it was refused.
    pub refused: Option<String>,
}

/// A descriptor's contents, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub abi: String,
    pub needs: Vec<String>,
    pub resources: Vec<String>,
}

impl From<PluginInfo> for Info {
    fn from(p: PluginInfo) -> Self {
        let needs = [
            (scdd_plugin_api::SCDD_NEEDS_LOG_NORMALISED, "log-normalised"),
            (scdd_plugin_api::SCDD_NEEDS_GENE_NAMES, "gene-names"),
            (scdd_plugin_api::SCDD_NEEDS_COUNTS, "counts"),
        ]
        .into_iter()
        .filter(|(bit, _)| p.needs & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
        Info { name: p.name, version: p.version, abi: format!("{}.{}", p.abi_major, p.abi_minor), needs, resources: p.resources }
    }
}

/// The built-in plugin folder: `plugins/` next to the running binary.
pub fn builtin_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(|d| d.join("plugins"))
}

/// The file-name prefix of the plugins built in this workspace (`libscdd_plugin_celltypist.so`).
pub fn builtin_prefix() -> String {
    format!("{}scdd_plugin_", std::env::consts::DLL_PREFIX)
}

/// Directories to search, in order, each with the file-name prefix a library there must have
/// (None: any): `SCDD_PLUGIN_PATH`, the built-in folder, and the binary's own directory for
/// the workspace's plugins as cargo lays them out (`target/<profile>/libscdd_plugin_*.so`).
pub fn search_dirs() -> Vec<(PathBuf, Origin, Option<String>)> {
    let mut dirs: Vec<(PathBuf, Origin, Option<String>)> = std::env::var_os(PLUGIN_PATH_VAR)
        .map(|v| std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).map(|p| (p, Origin::EnvPath, None)).collect())
        .unwrap_or_default();
    if let Some(b) = builtin_dir() {
        if let Some(exe_dir) = b.parent() {
            dirs.push((b.clone(), Origin::BuiltIn, None));
            dirs.push((exe_dir.to_path_buf(), Origin::BuiltIn, Some(builtin_prefix())));
        }
    }
    dirs
}

/// Every candidate: `paths` first, then the shared libraries of each search directory (sorted by
/// name; a directory that does not exist contributes nothing). Each is probed: in a worker
/// subprocess when `worker` (the scdd binary) is given, so that a library whose initialisers
/// crash costs only its own verdict; else in this process.
pub fn discover(paths: &[PathBuf], worker: Option<&Path>) -> Vec<Candidate> {
    let probe_candidate = |path: &Path, origin: Origin| {
        let verdict = match worker {
            Some(w) => probe_in_worker(w, path),
            None => probe(path).map(Info::from),
        };
        match verdict {
            Ok(info) => Candidate { path: path.to_path_buf(), origin, info: Some(info), refused: None },
            Err(why) => Candidate { path: path.to_path_buf(), origin, info: None, refused: Some(why) },
        }
    };
    let mut out: Vec<Candidate> = paths.iter().map(|p| probe_candidate(p, Origin::Path)).collect();
    for (dir, origin, prefix) in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let named = |p: &Path| match &prefix {
            Some(pre) => p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(pre.as_str())),
            None => true,
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION) && named(p))
            .collect();
        files.sort();
        out.extend(files.iter().map(|p| probe_candidate(p, origin)));
    }
    out
}

/// [`probe`] in a worker subprocess (`scdd plugin-worker --probe PLUGIN`, 60 s at most): the
/// descriptor as JSON on its stdout, or the reason on its stderr; a crash names its signal.
pub fn probe_in_worker(worker: &Path, path: &Path) -> std::result::Result<Info, String> {
    let out = super::worker::run_limited(
        std::process::Command::new(worker).arg("plugin-worker").arg("--probe").arg(path),
        std::time::Duration::from_secs(60),
    )?;
    if !out.status.success() {
        return Err(super::worker::describe_exit(out.status, &out.last_stderr_line));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable probe answer ({e})"))
}

/// A loaded plugin whose descriptor passed [`check_descriptor`].
pub struct Loaded {
    /// Points into `_lib`'s static data: valid while this value lives.
    pub descriptor: *const ScddPluginDescriptor,
    pub info: PluginInfo,
    _lib: libloading::Library,
}

/// Loads `path`, finds the descriptor and checks it. The reason for a refusal is one line
/// naming the problem.
pub fn open(path: &Path) -> std::result::Result<Loaded, String> {
    if !path.is_file() {
        return Err(if path.exists() { "not a file".into() } else { "no such file".into() });
    }
    // SAFETY: loading runs the library's initialisers; a library that crashes there takes the
    // caller with it (fit and predict run in worker subprocesses for that reason).
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("not a loadable shared library ({e})"))?;
    // SAFETY: the symbol's type is the ABI's; check_descriptor reads nothing before the magic.
    let (descriptor, info) = unsafe {
        let f = lib
            .get::<ScddDescriptorFn>(format!("{DESCRIPTOR_SYMBOL}\0").as_bytes())
            .map_err(|_| format!("no `{DESCRIPTOR_SYMBOL}` symbol: not an scdd plugin"))?;
        let d = f();
        (d, check_descriptor(d).map_err(|e| e.to_string())?)
    };
    Ok(Loaded { descriptor, info, _lib: lib })
}

/// [`open`], keeping only the descriptor's contents (the library is unloaded again).
pub fn probe(path: &Path) -> std::result::Result<PluginInfo, String> {
    open(path).map(|l| l.info)
}

/// The candidates as a table.
pub fn render(found: &[Candidate]) -> String {
    if found.is_empty() {
        let dirs: Vec<String> = search_dirs().iter().map(|(d, _, _)| d.display().to_string()).collect();
        return format!("no plugins found (searched: {}; set {PLUGIN_PATH_VAR} or name a file)\n", dirs.join(", "));
    }
    let mut s = String::from("| name | version | ABI | needs | origin | path | status |\n|---|---|---|---|---|---|---|\n");
    for c in found {
        let origin = match c.origin {
            Origin::Path => "path",
            Origin::EnvPath => PLUGIN_PATH_VAR,
            Origin::BuiltIn => "built-in",
        };
        let (name, version, abi, needs) = match &c.info {
            Some(i) => (i.name.as_str(), i.version.as_str(), i.abi.as_str(), i.needs.join(", ")),
            None => ("—", "—", "—", String::new()),
        };
        let status = match &c.refused {
            None => "ok".to_string(),
            Some(why) => format!("refused: {why}"),
        };
        s.push_str(&format!("| {name} | {version} | {abi} | {needs} | {origin} | {} | {status} |\n", c.path.display()));
    }
    s
}

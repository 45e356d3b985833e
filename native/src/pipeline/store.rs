//! The content-addressed stage store under `out_dir/stages`.
//!
//! Every stage writes into `stages/<stage>-<hash12>/`, where the hash is SHA-256 over the stage
//! name, the scdd version, its parameters (canonical JSON of the typed parameter struct, keys
//! sorted) and the content hashes of its input files. File hashes are computed once and
//! memoised by path + size + mtime in `stages/hashes.json`. A stage is complete when its
//! `done.json` is present (written last, atomically); a complete stage is reused, an incomplete
//! directory is cleared and run again.
use crate::error::{Context, Result};
use crate::io::artifacts::hex;
use crate::io::fs;
use crate::report::{fmt_secs, StageRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemoEntry {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneMarker {
    kind: String,
    label: String,
    hash: String,
    scdd_version: String,
    params: Value,
    inputs: Vec<InputRef>,
    finished: String,
    seconds: f64,
    device: String,
}

/// An input file of a stage with its content hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputRef {
    pub path: String,
    pub sha256: String,
}

/// The stage directory tree under `out_dir/stages`.
pub struct StageStore {
    root: PathBuf,
    memo: BTreeMap<String, MemoEntry>,
    /// Refuse to run anything (`--only-report`).
    pub read_only: bool,
    pub device: String,
    pub records: Vec<StageRecord>,
}

/// What a stage is: its kind, the dataset and a label for people.
pub struct StageId<'a> {
    pub kind: &'a str,
    pub dataset: &'a str,
    pub label: String,
}

impl StageStore {
    pub fn open(root: &Path, read_only: bool, device: &str) -> Result<StageStore> {
        std::fs::create_dir_all(root).with_context(|| format!("{}: cannot create directory", root.display()))?;
        let memo_path = root.join("hashes.json");
        let memo = match std::fs::read(&memo_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(), // a damaged memo is only a cache
            Err(_) => BTreeMap::new(),
        };
        Ok(StageStore { root: root.to_path_buf(), memo, read_only, device: device.into(), records: vec![] })
    }

    /// SHA-256 of a file's content, memoised by path + size + mtime.
    pub fn file_hash(&mut self, path: &Path) -> Result<String> {
        let key = std::fs::canonicalize(path).with_context(|| format!("{}: cannot open", path.display()))?.display().to_string();
        let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if let Some(e) = self.memo.get(&key) {
            if e.size == meta.len() && e.mtime_ns == mtime_ns {
                return Ok(e.sha256.clone());
            }
        }
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).with_context(|| format!("{}: reading", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha = hex(&h.finalize());
        self.memo.insert(key, MemoEntry { size: meta.len(), mtime_ns, sha256: sha.clone() });
        fs::write_json(&self.root.join("hashes.json"), &self.memo)?;
        Ok(sha)
    }

    /// The stage's hash: name, version, parameters and input contents.
    pub fn stage_hash(&mut self, kind: &str, params: &Value, inputs: &[PathBuf]) -> Result<(String, Vec<InputRef>)> {
        let mut refs = Vec::new();
        for p in inputs {
            refs.push(InputRef { path: p.display().to_string(), sha256: self.file_hash(p)? });
        }
        let key = json!({
            "stage": kind,
            "scdd_version": scdd_core::SCDD_VERSION,
            "params": params,
            "inputs": refs.iter().map(|r| r.sha256.clone()).collect::<Vec<_>>(),
        });
        Ok((hex(&Sha256::digest(canonical_json(&key).as_bytes())), refs))
    }

    /// Runs `run(dir)` unless the stage with this hash is complete; returns its directory.
    /// `params` is the stage's typed parameter struct, hashed as canonical JSON.
    pub fn stage<P: Serialize>(
        &mut self,
        id: StageId,
        params: &P,
        inputs: &[PathBuf],
        run: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let params = serde_json::to_value(params)?;
        let (hash, refs) = self.stage_hash(id.kind, &params, inputs)?;
        let dir = self.root.join(format!("{}-{}", id.kind, &hash[..12]));
        let marker = dir.join("done.json");
        let reused = marker.exists();
        let label = id.label;
        let seconds = if reused {
            println!("  reused  {label}  [{}]", short(&dir));
            std::fs::read(&marker)
                .ok()
                .and_then(|b| serde_json::from_slice::<DoneMarker>(&b).ok())
                .map(|m| m.seconds)
                .unwrap_or(f64::NAN)
        } else {
            if self.read_only {
                crate::error::bail!("{label}: stage {} has not run yet (--only-report runs nothing; run without it first)", short(&dir));
            }
            println!("▶ {label}  [{}]", short(&dir));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot clear an incomplete stage", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
            let t0 = Instant::now();
            run(&dir).with_context(|| label.clone())?;
            let seconds = t0.elapsed().as_secs_f64();
            let done = DoneMarker {
                kind: id.kind.into(),
                label: label.clone(),
                hash: hash.clone(),
                scdd_version: scdd_core::SCDD_VERSION.into(),
                params,
                inputs: refs,
                finished: fs::now_rfc3339(),
                seconds,
                device: self.device.clone(),
            };
            fs::write_json(&marker, &done)?;
            println!("  done    {label} in {}", fmt_secs(seconds));
            seconds
        };
        self.records.push(StageRecord {
            kind: id.kind.into(),
            label,
            dataset: id.dataset.into(),
            hash,
            dir: dir.clone(),
            ran: !reused,
            seconds,
        });
        Ok(dir)
    }
}

fn short(dir: &Path) -> String {
    let n = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("stages/{n}")
}

/// JSON with object keys sorted at every level: a stable text to hash.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[k.as_str()]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys() {
        let a = json!({"b": 1, "a": {"d": [1, 2], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,2]},"b":1}"#);
    }

    #[test]
    fn stages_run_once_and_are_reused_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.txt");
        std::fs::write(&input, "a").unwrap();
        let mut store = StageStore::open(&dir.path().join("stages"), false, "cpu").unwrap();
        let id = || StageId { kind: "x", dataset: "d", label: "d: x".into() };
        let mut runs = 0;
        let d1 = store.stage(id(), &json!({"k": 1}), std::slice::from_ref(&input), |_| { runs += 1; Ok(()) }).unwrap();
        let d2 = store.stage(id(), &json!({"k": 1}), std::slice::from_ref(&input), |_| { runs += 1; Ok(()) }).unwrap();
        assert_eq!((d1.clone(), runs), (d2, 1), "same parameters and input: reused");
        let d3 = store.stage(id(), &json!({"k": 2}), std::slice::from_ref(&input), |_| { runs += 1; Ok(()) }).unwrap();
        assert_ne!(d1, d3);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&input, "b").unwrap();
        let d4 = store.stage(id(), &json!({"k": 1}), std::slice::from_ref(&input), |_| { runs += 1; Ok(()) }).unwrap();
        assert_ne!(d1, d4, "changed input content: a new stage");
        assert_eq!(runs, 3);
        // a failing stage leaves no done marker: it runs again next time
        let e = store.stage(id(), &json!({"k": 9}), std::slice::from_ref(&input), |_| Err(crate::Error::msg("boom")));
        assert!(e.is_err());
        let d5 = store.stage(id(), &json!({"k": 9}), std::slice::from_ref(&input), |_| { runs += 1; Ok(()) }).unwrap();
        assert!(d5.join("done.json").exists());
        assert_eq!(runs, 4);
        let mut ro = StageStore::open(&dir.path().join("stages"), true, "cpu").unwrap();
        assert!(ro.stage(id(), &json!({"k": 77}), &[], |_| Ok(())).is_err(), "read-only runs nothing");
        assert!(ro.stage(id(), &json!({"k": 2}), std::slice::from_ref(&input), |_| Ok(())).is_err(), "input changed since");
    }
}

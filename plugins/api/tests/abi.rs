//! The ABI as the host sees it: a Rust evaluator exported with `export_plugin!`, called only
//! through the descriptor's function pointers with C-layout inputs.

use scdd_plugin_api::*;
use std::ffi::{c_char, CStr, CString};

/// Nearest centroid; `{"fail": "fit"}` makes fit fail, `{"panic": "predict"}` makes predict panic.
struct Centroid {
    means: Vec<Vec<f32>>,
    fail: String,
    panic: String,
}

fn field(config: &str, key: &str) -> String {
    // A tiny reader for {"key": "value"}: the crate has no JSON dependency on purpose.
    let pat = format!("\"{key}\"");
    config
        .find(&pat)
        .and_then(|i| config[i + pat.len()..].split('"').nth(1))
        .map(str::to_string)
        .unwrap_or_default()
}

impl Evaluator for Centroid {
    fn create(config: &str, _seed: u64) -> Result<Self, String> {
        if !config.trim_start().starts_with('{') {
            return Err(format!("config is not a JSON object: {config}"));
        }
        Ok(Centroid { means: vec![], fail: field(config, "fail"), panic: field(config, "panic") })
    }

    fn fit(&mut self, d: &FitData<'_>) -> Result<(), String> {
        if self.fail == "fit" {
            return Err("asked to fail".into());
        }
        if self.panic == "fit" {
            panic!("asked to panic in fit");
        }
        let k = d.class_names.len();
        let mut sums = vec![vec![0f32; d.x.n_genes]; k];
        let mut n = vec![0usize; k];
        for (i, &l) in d.labels.iter().enumerate() {
            n[l as usize] += 1;
            sums[l as usize].iter_mut().zip(d.x.row(i)).for_each(|(s, v)| *s += v);
        }
        self.means = sums.into_iter().zip(n).map(|(s, c)| s.into_iter().map(|v| v / c.max(1) as f32).collect()).collect();
        Ok(())
    }

    fn predict(&mut self, d: &PredictData<'_>, labels: &mut [u32], probs: &mut [f32]) -> Result<(), String> {
        if self.panic == "predict" {
            panic!("asked to panic in predict");
        }
        let k = self.means.len();
        for i in 0..d.x.n_cells {
            let dist: Vec<f32> = self.means.iter().map(|m| m.iter().zip(d.x.row(i)).map(|(a, b)| (a - b).powi(2)).sum()).collect();
            let best = (0..k).min_by(|&a, &b| dist[a].total_cmp(&dist[b])).unwrap();
            labels[i] = best as u32;
            for c in 0..k {
                probs[i * k + c] = if c == best { 1.0 } else { 0.0 };
            }
        }
        Ok(())
    }
}

export_plugin!(Centroid, name: "centroid-test", version: "0.3.1", needs: SCDD_NEEDS_LOG_NORMALISED | SCDD_NEEDS_GENE_NAMES, resources: "gmt, other");

fn desc() -> &'static ScddPluginDescriptor {
    unsafe { &*scdd_plugin_descriptor() }
}

unsafe fn error(m: *const ScddModel) -> String {
    CStr::from_ptr((desc().last_error)(m)).to_string_lossy().into_owned()
}

struct Owned {
    x: Vec<f32>,
    labels: Vec<u32>,
    class_names: Vec<CString>,
    gene_names: Vec<CString>,
    class_ptrs: Vec<*const c_char>,
    gene_ptrs: Vec<*const c_char>,
}

fn data() -> Owned {
    // Two classes, three genes: class 0 high on gene 0, class 1 high on gene 2.
    let x = vec![5.0, 0.1, 0.0, 4.0, 0.2, 0.1, 0.0, 0.3, 6.0, 0.2, 0.1, 5.0];
    let class_names: Vec<CString> = ["alpha", "beta"].iter().map(|s| CString::new(*s).unwrap()).collect();
    let gene_names: Vec<CString> = ["G0", "G1", "G2"].iter().map(|s| CString::new(*s).unwrap()).collect();
    let class_ptrs = class_names.iter().map(|s| s.as_ptr()).collect();
    let gene_ptrs = gene_names.iter().map(|s| s.as_ptr()).collect();
    Owned { x, labels: vec![0, 0, 1, 1], class_names, gene_names, class_ptrs, gene_ptrs }
}

fn fit_input(o: &Owned) -> ScddFitInput {
    let _ = (&o.class_names, &o.gene_names);
    ScddFitInput {
        x: ScddMatrix { data: o.x.as_ptr(), n_cells: 4, n_genes: 3 },
        counts: ScddMatrix { data: std::ptr::null(), n_cells: 0, n_genes: 0 },
        labels: o.labels.as_ptr(),
        n_classes: 2,
        class_names: o.class_ptrs.as_ptr(),
        gene_names: o.gene_ptrs.as_ptr(),
    }
}

#[test]
fn the_host_reads_the_descriptor_and_calls_through_it() {
    let info = unsafe { check_descriptor(scdd_plugin_descriptor()) }.unwrap();
    assert_eq!(info.name, "centroid-test");
    assert_eq!(info.version, "0.3.1");
    assert_eq!((info.abi_major, info.abi_minor), (SCDD_PLUGIN_ABI_MAJOR, SCDD_PLUGIN_ABI_MINOR));
    assert_eq!(info.resources, vec!["gmt", "other"]);
    assert_eq!(info.needs, SCDD_NEEDS_LOG_NORMALISED | SCDD_NEEDS_GENE_NAMES);

    let o = data();
    let cfg = CString::new("{}").unwrap();
    unsafe {
        let m = (desc().create)(cfg.as_ptr(), 7);
        assert!(!m.is_null());
        // predict before fit: an error, not a crash
        let q = [0.1f32, 0.0, 5.5];
        let input = ScddPredictInput {
            x: ScddMatrix { data: q.as_ptr(), n_cells: 1, n_genes: 3 },
            counts: ScddMatrix { data: std::ptr::null(), n_cells: 0, n_genes: 0 },
        };
        let (mut labels, mut probs) = (vec![9u32; 1], vec![0f32; 2]);
        let mut out = ScddPredictOutput { labels: labels.as_mut_ptr(), probs: probs.as_mut_ptr() };
        assert_eq!((desc().predict)(m, &input, &mut out), SCDD_ERROR);
        assert!(error(m).contains("before a successful fit"), "{}", error(m));

        assert_eq!((desc().fit)(m, &fit_input(&o)), SCDD_OK, "{}", error(m));
        assert_eq!(error(m), "");
        assert_eq!((desc().predict)(m, &input, &mut out), SCDD_OK);
        assert_eq!(labels, vec![1]);
        assert_eq!(probs, vec![0.0, 1.0]);

        // a label out of range is refused before the plugin sees it
        let mut bad = fit_input(&o);
        let wrong = [0u32, 2, 1, 1];
        bad.labels = wrong.as_ptr();
        assert_eq!((desc().fit)(m, &bad), SCDD_ERROR);
        assert!(error(m).contains("label 2"), "{}", error(m));
        // a gene count that differs from fit
        let input2 = ScddPredictInput { x: ScddMatrix { data: q.as_ptr(), n_cells: 1, n_genes: 2 }, ..input };
        assert_eq!((desc().predict)(m, &input2, &mut out), SCDD_ERROR);
        assert!(error(m).contains("2 genes"), "{}", error(m));
        (desc().free)(m);
        (desc().free)(std::ptr::null_mut());
    }
}

#[test]
fn errors_and_panics_stop_at_the_boundary() {
    let o = data();
    unsafe {
        let not_json = CString::new("[1, 2]").unwrap();
        assert!((desc().create)(not_json.as_ptr(), 0).is_null());
        assert!(error(std::ptr::null()).contains("not a JSON object"), "{}", error(std::ptr::null()));

        let fail = CString::new(r#"{"fail": "fit"}"#).unwrap();
        let m = (desc().create)(fail.as_ptr(), 0);
        assert_eq!((desc().fit)(m, &fit_input(&o)), SCDD_ERROR);
        assert_eq!(error(m), "asked to fail");
        (desc().free)(m);

        let boom = CString::new(r#"{"panic": "fit"}"#).unwrap();
        let m = (desc().create)(boom.as_ptr(), 0);
        assert_eq!((desc().fit)(m, &fit_input(&o)), SCDD_PANIC);
        assert_eq!(error(m), "panicked: asked to panic in fit");
        (desc().free)(m);
    }
}

#[test]
fn a_foreign_or_newer_descriptor_is_refused_naming_both_versions() {
    let mut d = unsafe { std::ptr::read(scdd_plugin_descriptor()) };
    d.abi_major = SCDD_PLUGIN_ABI_MAJOR + 1;
    let e = unsafe { check_descriptor(&d) }.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&format!("plugin ABI {}.0", SCDD_PLUGIN_ABI_MAJOR + 1)), "{msg}");
    assert!(msg.contains(&format!("ABI {SCDD_PLUGIN_ABI_MAJOR}.{SCDD_PLUGIN_ABI_MINOR}")), "{msg}");
    d.abi_major = SCDD_PLUGIN_ABI_MAJOR;
    d.abi_minor = SCDD_PLUGIN_ABI_MINOR + 1;
    assert!(matches!(unsafe { check_descriptor(&d) }, Err(AbiError::Version { .. })));
    d.abi_minor = SCDD_PLUGIN_ABI_MINOR;
    d.magic = 0x1234;
    assert_eq!(unsafe { check_descriptor(&d) }, Err(AbiError::BadMagic(0x1234)));
    d.magic = SCDD_PLUGIN_MAGIC;
    d.descriptor_size = 16;
    assert!(matches!(unsafe { check_descriptor(&d) }, Err(AbiError::TooSmall { size: 16, .. })));
    d.descriptor_size = std::mem::size_of::<ScddPluginDescriptor>() as u32;
    d.needs = 1 << 9;
    assert!(matches!(unsafe { check_descriptor(&d) }, Err(AbiError::UnknownNeeds(_))));
    d.needs = 0;
    d.name = std::ptr::null();
    assert_eq!(unsafe { check_descriptor(&d) }, Err(AbiError::BadString("name")));
    assert_eq!(unsafe { check_descriptor(std::ptr::null()) }, Err(AbiError::NullDescriptor));
}

#[test]
fn the_magic_spells_scddplug() {
    assert_eq!(SCDD_PLUGIN_MAGIC, u64::from_le_bytes(*b"SCDDPLUG"));
}

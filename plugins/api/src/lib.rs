//! The stable C ABI between scdd and evaluator plugins (shared libraries loaded at run time).
//!
//! A plugin exports one symbol, [`DESCRIPTOR_SYMBOL`] (`scdd_plugin_descriptor`), a function
//! returning a pointer to a static [`ScddPluginDescriptor`]. The host reads the descriptor's
//! first fields — magic, ABI major/minor, the descriptor's size — and refuses the plugin,
//! naming both versions, before it reads anything else or calls any function
//! ([`check_descriptor`]). Then: `create` a model from a JSON config and a seed, `fit` it on a
//! dense f32 matrix with class ids, class names and gene names, `predict` class ids and
//! per-class probabilities, `free` it; `last_error` explains a failed call.
//!
//! **Memory ownership.** Everything passed *into* a call (matrices, labels, names, the config)
//! is owned by the host and borrowed for the duration of that call only. Output buffers of
//! `predict` are allocated by the host (`n_cells` ids, `n_cells × n_classes` probabilities) and
//! filled by the plugin. A model is owned by the plugin from `create` until the host passes it
//! to `free`, exactly once. Strings the plugin returns (`name`, `version`, `resources`: static;
//! `last_error`: owned by the plugin, valid until the next call with the same model on the same
//! thread) are never freed by the host.
//!
//! **Versioning.** A new major version breaks the layout; a new minor version only appends
//! fields to the end of the descriptor or of an input struct. The host accepts a plugin of the
//! same major version whose minor version is not newer than its own.
//!
//! Rust authors implement [`Evaluator`] and call [`export_plugin!`]; every panic is caught at
//! the boundary and reported as a failed call. C and C++ authors include
//! `plugins/api/include/scdd_plugin.h`.
//!
//! No dependencies: the crate stays light (no tch, hdf5, ndarray) so any plugin can use it.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `"SCDDPLUG"` read as a little-endian u64: the first field of every descriptor.
pub const SCDD_PLUGIN_MAGIC: u64 = 0x4755_4C50_4444_4353;
/// Layout-breaking version of this ABI.
pub const SCDD_PLUGIN_ABI_MAJOR: u32 = 1;
/// Additive version of this ABI (fields appended).
pub const SCDD_PLUGIN_ABI_MINOR: u32 = 0;
/// The exported symbol every plugin defines (`const ScddPluginDescriptor *scdd_plugin_descriptor(void)`).
pub const DESCRIPTOR_SYMBOL: &str = "scdd_plugin_descriptor";

/// Bits of [`ScddPluginDescriptor::needs`]: what the host must supply to `fit` and `predict`.
pub const SCDD_NEEDS_LOG_NORMALISED: u32 = 1;
/// Gene names (`ScddFitInput::gene_names`; otherwise the host may pass null).
pub const SCDD_NEEDS_GENE_NAMES: u32 = 1 << 1;
/// Raw counts next to the log-normalised matrix (`ScddFitInput::counts`, `ScddPredictInput::counts`).
pub const SCDD_NEEDS_COUNTS: u32 = 1 << 2;
/// Every bit this version defines; a plugin asking for another is refused.
pub const SCDD_NEEDS_KNOWN: u32 = SCDD_NEEDS_LOG_NORMALISED | SCDD_NEEDS_GENE_NAMES | SCDD_NEEDS_COUNTS;

/// Return values of `fit` and `predict`.
pub const SCDD_OK: i32 = 0;
/// The call failed; `last_error(model)` says why.
pub const SCDD_ERROR: i32 = 1;
/// The plugin panicked (Rust) or threw (C++); `last_error(model)` has the message.
pub const SCDD_PANIC: i32 = 2;

/// An opaque model owned by the plugin (a forward-declared struct in C).
pub struct ScddModel {
    _private: [u8; 0],
}

/// A dense row-major f32 matrix (`n_cells × n_genes`), borrowed for one call. `data` may be null
/// only where the descriptor did not ask for the matrix (e.g. counts without `SCDD_NEEDS_COUNTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScddMatrix {
    pub data: *const f32,
    pub n_cells: u64,
    pub n_genes: u64,
}

/// What `fit` receives. Names are NUL-terminated UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScddFitInput {
    /// Log-normalised cells (`log1p` of counts scaled to the bundle's total).
    pub x: ScddMatrix,
    /// Raw counts of the same cells and genes (null data unless `SCDD_NEEDS_COUNTS`).
    pub counts: ScddMatrix,
    /// Class id of each cell, `< n_classes`.
    pub labels: *const u32,
    pub n_classes: u32,
    /// `n_classes` names.
    pub class_names: *const *const c_char,
    /// `n_genes` names (may be null unless `SCDD_NEEDS_GENE_NAMES`).
    pub gene_names: *const *const c_char,
}

/// What `predict` receives: cells with the genes of `fit`, in the same order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScddPredictInput {
    pub x: ScddMatrix,
    pub counts: ScddMatrix,
}

/// Host-allocated outputs of `predict`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ScddPredictOutput {
    /// `n_cells` class ids.
    pub labels: *mut u32,
    /// `n_cells × n_classes` probabilities, row-major; each row sums to 1.
    pub probs: *mut f32,
}

/// `create(config_json, seed)`: a new model, or null (then `last_error(NULL)` says why).
pub type ScddCreateFn = unsafe extern "C" fn(config_json: *const c_char, seed: u64) -> *mut ScddModel;
/// `fit(model, input)` → `SCDD_OK` / `SCDD_ERROR` / `SCDD_PANIC`.
pub type ScddFitFn = unsafe extern "C" fn(model: *mut ScddModel, input: *const ScddFitInput) -> i32;
/// `predict(model, input, output)` → `SCDD_OK` / `SCDD_ERROR` / `SCDD_PANIC`.
pub type ScddPredictFn =
    unsafe extern "C" fn(model: *mut ScddModel, input: *const ScddPredictInput, output: *mut ScddPredictOutput) -> i32;
/// `free(model)`: releases a model from `create` (null is ignored).
pub type ScddFreeFn = unsafe extern "C" fn(model: *mut ScddModel);
/// `last_error(model)`: the last failure on this model (`NULL`: the last failed `create` on this
/// thread); an empty string when there was none. Owned by the plugin.
pub type ScddLastErrorFn = unsafe extern "C" fn(model: *const ScddModel) -> *const c_char;

/// The type of the one function a plugin exports, under the name `scdd_plugin_descriptor`
/// ([`DESCRIPTOR_SYMBOL`]): it returns the plugin's static descriptor.
pub type ScddDescriptorFn = unsafe extern "C" fn() -> *const ScddPluginDescriptor;

/// The static description every plugin exports. Field order is the ABI: the first four fields
/// never move.
#[repr(C)]
#[derive(Debug)]
pub struct ScddPluginDescriptor {
    /// [`SCDD_PLUGIN_MAGIC`].
    pub magic: u64,
    pub abi_major: u32,
    pub abi_minor: u32,
    /// `sizeof(ScddPluginDescriptor)` as the plugin was built.
    pub descriptor_size: u32,
    /// `SCDD_NEEDS_*` bits.
    pub needs: u32,
    /// Plugin name (`[A-Za-z0-9_-]+`), static.
    pub name: *const c_char,
    /// Plugin version, static.
    pub version: *const c_char,
    /// Comma-separated names of optional resources the config may point to (e.g. `gmt`), static;
    /// empty when none.
    pub resources: *const c_char,
    pub create: ScddCreateFn,
    pub fit: ScddFitFn,
    pub predict: ScddPredictFn,
    pub free: ScddFreeFn,
    pub last_error: ScddLastErrorFn,
}

/// A descriptor in a `static` (its raw pointers all point at static data).
#[repr(transparent)]
pub struct StaticDescriptor(pub ScddPluginDescriptor);
// SAFETY: the pointers it holds point at immutable 'static strings and functions.
unsafe impl Sync for StaticDescriptor {}

/// What the host learns from a descriptor it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub abi_major: u32,
    pub abi_minor: u32,
    pub needs: u32,
    pub resources: Vec<String>,
}

/// Why a descriptor was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbiError {
    NullDescriptor,
    BadMagic(u64),
    Version { plugin: (u32, u32), host: (u32, u32) },
    TooSmall { size: u32, need: u32 },
    UnknownNeeds(u32),
    BadString(&'static str),
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbiError::NullDescriptor => write!(f, "{DESCRIPTOR_SYMBOL}() returned null"),
            AbiError::BadMagic(m) => write!(f, "not an scdd plugin descriptor (magic {m:#018x})"),
            AbiError::Version { plugin, host } => write!(
                f,
                "plugin ABI {}.{}, this scdd speaks ABI {}.{} (same major, minor up to {})",
                plugin.0, plugin.1, host.0, host.1, host.1
            ),
            AbiError::TooSmall { size, need } => {
                write!(f, "descriptor of {size} bytes, ABI {SCDD_PLUGIN_ABI_MAJOR}.x needs at least {need}")
            }
            AbiError::UnknownNeeds(bits) => write!(f, "needs unknown inputs (bits {bits:#x})"),
            AbiError::BadString(field) => write!(f, "descriptor field `{field}` is null or not UTF-8"),
        }
    }
}

impl std::error::Error for AbiError {}

/// Checks a descriptor the way the host does before calling anything: magic, then version,
/// then size, then the rest.
///
/// # Safety
/// `d` is null or points at memory readable for at least the first 24 bytes of a descriptor,
/// and for `descriptor_size` bytes when the version matches.
pub unsafe fn check_descriptor(d: *const ScddPluginDescriptor) -> Result<PluginInfo, AbiError> {
    if d.is_null() {
        return Err(AbiError::NullDescriptor);
    }
    let magic = std::ptr::addr_of!((*d).magic).read_unaligned();
    if magic != SCDD_PLUGIN_MAGIC {
        return Err(AbiError::BadMagic(magic));
    }
    let major = std::ptr::addr_of!((*d).abi_major).read_unaligned();
    let minor = std::ptr::addr_of!((*d).abi_minor).read_unaligned();
    if major != SCDD_PLUGIN_ABI_MAJOR || minor > SCDD_PLUGIN_ABI_MINOR {
        return Err(AbiError::Version { plugin: (major, minor), host: (SCDD_PLUGIN_ABI_MAJOR, SCDD_PLUGIN_ABI_MINOR) });
    }
    let size = std::ptr::addr_of!((*d).descriptor_size).read_unaligned();
    let need = std::mem::size_of::<ScddPluginDescriptor>() as u32;
    if size < need {
        return Err(AbiError::TooSmall { size, need });
    }
    let d = &*d;
    if d.needs & !SCDD_NEEDS_KNOWN != 0 {
        return Err(AbiError::UnknownNeeds(d.needs & !SCDD_NEEDS_KNOWN));
    }
    let s = |p: *const c_char, field: &'static str| -> Result<String, AbiError> {
        if p.is_null() {
            return Err(AbiError::BadString(field));
        }
        CStr::from_ptr(p).to_str().map(str::to_string).map_err(|_| AbiError::BadString(field))
    };
    let resources = s(d.resources, "resources")?;
    Ok(PluginInfo {
        name: s(d.name, "name")?,
        version: s(d.version, "version")?,
        abi_major: major,
        abi_minor: minor,
        needs: d.needs,
        resources: resources.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_string).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// The Rust side: a safe trait and the glue `export_plugin!` instantiates.

/// A borrowed dense row-major matrix.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub n_cells: usize,
    pub n_genes: usize,
}

impl<'a> Matrix<'a> {
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.n_genes..(i + 1) * self.n_genes]
    }
}

/// What [`Evaluator::fit`] receives.
#[derive(Debug)]
pub struct FitData<'a> {
    pub x: Matrix<'a>,
    pub counts: Option<Matrix<'a>>,
    pub labels: &'a [u32],
    pub class_names: Vec<&'a str>,
    /// Empty when the host was not asked for gene names.
    pub gene_names: Vec<&'a str>,
}

/// What [`Evaluator::predict`] receives.
#[derive(Debug)]
pub struct PredictData<'a> {
    pub x: Matrix<'a>,
    pub counts: Option<Matrix<'a>>,
}

/// An evaluator written in Rust. Errors are messages for the user; panics are caught.
pub trait Evaluator: Sized {
    /// A model from the user's JSON config (`"{}"` when none) and a seed.
    fn create(config_json: &str, seed: u64) -> Result<Self, String>;
    fn fit(&mut self, data: &FitData<'_>) -> Result<(), String>;
    /// Fills `labels` (`n_cells`) and `probs` (`n_cells × n_classes`).
    fn predict(&mut self, data: &PredictData<'_>, labels: &mut [u32], probs: &mut [f32]) -> Result<(), String>;
}

/// The plugin-side handle behind a `*mut ScddModel`.
struct Slot<T> {
    model: T,
    n_classes: usize,
    n_genes: usize,
    error: CString,
}

thread_local! {
    static CREATE_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn c_message(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let m = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
    format!("panicked: {}", m.unwrap_or_else(|| "(no message)".into()))
}

unsafe fn matrix<'a>(m: &ScddMatrix, what: &str) -> Result<Matrix<'a>, String> {
    let (n, g) = (m.n_cells as usize, m.n_genes as usize);
    if m.data.is_null() {
        return Err(format!("{what}: null data"));
    }
    let len = n.checked_mul(g).ok_or_else(|| format!("{what}: {n} × {g} overflows"))?;
    Ok(Matrix { data: std::slice::from_raw_parts(m.data, len), n_cells: n, n_genes: g })
}

unsafe fn names<'a>(p: *const *const c_char, n: usize, what: &str) -> Result<Vec<&'a str>, String> {
    if p.is_null() {
        return Ok(vec![]);
    }
    std::slice::from_raw_parts(p, n)
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            if s.is_null() {
                return Err(format!("{what} {i} is null"));
            }
            CStr::from_ptr(s).to_str().map_err(|_| format!("{what} {i} is not UTF-8"))
        })
        .collect()
}

/// `create` for `T` (used by [`export_plugin!`]).
///
/// # Safety
/// `config_json` is null or a NUL-terminated string.
pub unsafe extern "C" fn ffi_create<T: Evaluator>(config_json: *const c_char, seed: u64) -> *mut ScddModel {
    let r = catch_unwind(AssertUnwindSafe(|| {
        let config = if config_json.is_null() {
            "{}"
        } else {
            CStr::from_ptr(config_json).to_str().map_err(|_| "config is not UTF-8".to_string())?
        };
        T::create(config, seed)
    }));
    let r = r.unwrap_or_else(|p| Err(panic_message(p)));
    match r {
        Ok(model) => {
            CREATE_ERROR.with(|e| *e.borrow_mut() = CString::default());
            Box::into_raw(Box::new(Slot { model, n_classes: 0, n_genes: 0, error: CString::default() })) as *mut ScddModel
        }
        Err(msg) => {
            CREATE_ERROR.with(|e| *e.borrow_mut() = c_message(&msg));
            std::ptr::null_mut()
        }
    }
}

fn finish<T>(slot: &mut Slot<T>, r: std::thread::Result<Result<(), String>>) -> i32 {
    let (code, msg) = match r {
        Ok(Ok(())) => (SCDD_OK, String::new()),
        Ok(Err(m)) => (SCDD_ERROR, m),
        Err(p) => (SCDD_PANIC, panic_message(p)),
    };
    slot.error = c_message(&msg);
    code
}

/// `fit` for `T` (used by [`export_plugin!`]).
///
/// # Safety
/// `model` comes from `ffi_create::<T>`; `input` points at a valid [`ScddFitInput`].
pub unsafe extern "C" fn ffi_fit<T: Evaluator>(model: *mut ScddModel, input: *const ScddFitInput) -> i32 {
    if model.is_null() || input.is_null() {
        return SCDD_ERROR;
    }
    let slot = &mut *(model as *mut Slot<T>);
    let input = &*input;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let x = matrix(&input.x, "x")?;
        let counts = if input.counts.data.is_null() { None } else { Some(matrix(&input.counts, "counts")?) };
        if input.labels.is_null() {
            return Err("labels: null".into());
        }
        let labels = std::slice::from_raw_parts(input.labels, x.n_cells);
        let n_classes = input.n_classes as usize;
        if let Some(bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
            return Err(format!("label {bad} ≥ n_classes {n_classes}"));
        }
        let data = FitData {
            x,
            counts,
            labels,
            class_names: names(input.class_names, n_classes, "class name")?,
            gene_names: names(input.gene_names, x.n_genes, "gene name")?,
        };
        slot.model.fit(&data)?;
        slot.n_classes = n_classes;
        slot.n_genes = x.n_genes;
        Ok(())
    }));
    finish(slot, r)
}

/// `predict` for `T` (used by [`export_plugin!`]).
///
/// # Safety
/// `model` comes from `ffi_create::<T>`; `input` and `output` point at valid structs whose
/// buffers hold `n_cells` ids and `n_cells × n_classes` probabilities.
pub unsafe extern "C" fn ffi_predict<T: Evaluator>(
    model: *mut ScddModel,
    input: *const ScddPredictInput,
    output: *mut ScddPredictOutput,
) -> i32 {
    if model.is_null() || input.is_null() || output.is_null() {
        return SCDD_ERROR;
    }
    let slot = &mut *(model as *mut Slot<T>);
    let (input, output) = (&*input, &*output);
    let r = catch_unwind(AssertUnwindSafe(|| {
        if slot.n_classes == 0 {
            return Err("predict before a successful fit".to_string());
        }
        let x = matrix(&input.x, "x")?;
        if x.n_genes != slot.n_genes {
            return Err(format!("x has {} genes, the model was fit on {}", x.n_genes, slot.n_genes));
        }
        let counts = if input.counts.data.is_null() { None } else { Some(matrix(&input.counts, "counts")?) };
        if output.labels.is_null() || output.probs.is_null() {
            return Err("null output buffer".into());
        }
        let labels = std::slice::from_raw_parts_mut(output.labels, x.n_cells);
        let probs = std::slice::from_raw_parts_mut(output.probs, x.n_cells * slot.n_classes);
        slot.model.predict(&PredictData { x, counts }, labels, probs)
    }));
    finish(slot, r)
}

/// `free` for `T` (used by [`export_plugin!`]).
///
/// # Safety
/// `model` is null or comes from `ffi_create::<T>` and was not freed before.
pub unsafe extern "C" fn ffi_free<T: Evaluator>(model: *mut ScddModel) {
    if !model.is_null() {
        let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(model as *mut Slot<T>))));
    }
}

/// `last_error` for `T` (used by [`export_plugin!`]).
///
/// # Safety
/// `model` is null or a live model from `ffi_create::<T>`.
pub unsafe extern "C" fn ffi_last_error<T: Evaluator>(model: *const ScddModel) -> *const c_char {
    if model.is_null() {
        CREATE_ERROR.with(|e| e.borrow().as_ptr())
    } else {
        (*(model as *const Slot<T>)).error.as_ptr()
    }
}

/// Exports `$ty` (an [`Evaluator`]) as an scdd plugin:
///
/// ```ignore
/// scdd_plugin_api::export_plugin!(MyEvaluator, name: "my-evaluator", version: "0.1.0",
///     needs: scdd_plugin_api::SCDD_NEEDS_LOG_NORMALISED, resources: "");
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty, name: $name:expr, version: $version:expr, needs: $needs:expr, resources: $resources:expr $(,)?) => {
        static SCDD_PLUGIN_DESCRIPTOR: $crate::StaticDescriptor = $crate::StaticDescriptor($crate::ScddPluginDescriptor {
            magic: $crate::SCDD_PLUGIN_MAGIC,
            abi_major: $crate::SCDD_PLUGIN_ABI_MAJOR,
            abi_minor: $crate::SCDD_PLUGIN_ABI_MINOR,
            descriptor_size: ::std::mem::size_of::<$crate::ScddPluginDescriptor>() as u32,
            needs: $needs,
            name: concat!($name, "\0").as_ptr() as *const ::std::ffi::c_char,
            version: concat!($version, "\0").as_ptr() as *const ::std::ffi::c_char,
            resources: concat!($resources, "\0").as_ptr() as *const ::std::ffi::c_char,
            create: $crate::ffi_create::<$ty>,
            fit: $crate::ffi_fit::<$ty>,
            predict: $crate::ffi_predict::<$ty>,
            free: $crate::ffi_free::<$ty>,
            last_error: $crate::ffi_last_error::<$ty>,
        });

        /// The scdd plugin descriptor.
        #[no_mangle]
        pub extern "C" fn scdd_plugin_descriptor() -> *const $crate::ScddPluginDescriptor {
            &SCDD_PLUGIN_DESCRIPTOR.0
        }
    };
}

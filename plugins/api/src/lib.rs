//! The stable C ABI for scdd evaluator plugins. Only the version constant exists yet: the
//! plugin issue adds the header, the fit/predict vtable and the host-side checks.

/// ABI version a plugin declares and the host checks before calling anything.
pub const SCDD_PLUGIN_ABI_VERSION: u32 = 0;

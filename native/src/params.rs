//! Parameters in two steps, as linfa does: a plain serde struct (what the CLI flags and the
//! pipeline's TOML config fill) is checked once by [`Check::check`] into a [`Checked`] value,
//! the only form the library's entry points accept. A range error names the flag (or config
//! key), the value and the rule, before any work starts.
use crate::error::Result;
use std::ops::Deref;

/// Parameters whose ranges have been checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked<T>(T);

impl<T> Checked<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

pub trait Check: Sized {
    /// Every range and cross-field rule; the first violation as [`crate::Error::Param`].
    fn validate(&self) -> Result<()>;

    fn check(self) -> Result<Checked<Self>> {
        self.validate()?;
        Ok(Checked(self))
    }
}

/// `value` must be finite and > 0.
pub fn positive(name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(crate::Error::param(name, value, "must be a finite number > 0"));
    }
    Ok(())
}

/// `value` must be finite and >= 0.
pub fn non_negative(name: &str, value: f64) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(crate::Error::param(name, value, "must be a finite number >= 0"));
    }
    Ok(())
}

/// `value` must lie in `[lo, hi)` (and be finite).
pub fn in_unit(name: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !(value.is_finite() && value >= lo && value < hi) {
        return Err(crate::Error::param(name, value, format!("must be in [{lo}, {hi})")));
    }
    Ok(())
}

/// `value` must lie in `[lo, hi]` (and be finite).
pub fn closed(name: &str, value: f64, lo: f64, hi: f64) -> Result<()> {
    if !(value.is_finite() && value >= lo && value <= hi) {
        return Err(crate::Error::param(name, value, format!("must be in [{lo}, {hi}]")));
    }
    Ok(())
}

/// `value` must lie in `lo..=hi`.
pub fn count(name: &str, value: u64, lo: u64, hi: u64) -> Result<()> {
    if value < lo || value > hi {
        return Err(crate::Error::param(name, value, format!("must be between {lo} and {hi}")));
    }
    Ok(())
}

//! The native library's error type. Library functions return [`Result`]; `cmd/` and `main.rs`
//! turn it into the one-line message a user sees. Variants that callers (and tests) act on are
//! typed; everything else is a message naming the file, field or flag and the value.
//!
//! [`Context`] adds a prefix ("file: ...") the way `anyhow::Context` does, without hiding the
//! typed variant underneath: [`Error::root`] looks through the prefixes.
use std::fmt::Display;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A parameter (CLI flag or config key) outside its range; raised before any work.
    #[error("{name} {value}: {rule}")]
    Param { name: String, value: String, rule: String },
    /// A run stopped on purpose (`--stop-after`) after writing its checkpoint.
    #[error("stopped after step {step}; checkpoint {}; continue with --resume", checkpoint.display())]
    Interrupted { step: u64, checkpoint: PathBuf },
    /// A file that is valid on its own but does not fit this use (a checkpoint of another
    /// kind or run, codes of another generator...).
    #[error("{}: {reason}", path.display())]
    Incompatible { path: PathBuf, reason: String },
    /// A bundle without the encoder where the encoder is needed.
    #[error("{}: has no encoder (a recipient's bundle); {needed} needs the generator bundle with its encoder", path.display())]
    MissingEncoder { path: PathBuf, needed: String },
    /// An output path that would overwrite an input, or that does not fit what is written.
    #[error("{}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    /// Work that would not fit the memory budget, refused before it starts.
    #[error("{what} needs about {need_mb:.0} MB, more than the {budget_mb:.0} MB budget; {hint}")]
    TooLarge { what: String, need_mb: f64, budget_mb: f64, hint: String },
    /// A loss that became NaN or infinite: the run stops.
    #[error("{what}: the loss became {value} at step {step}; lower {flag}")]
    NonFinite { what: String, step: u64, value: f64, flag: String },
    /// The core's errors (formats, data model, preprocessing).
    #[error("{0}")]
    Core(scdd_core::error::CoreError),
    /// Any other failure, as a message.
    #[error("{0}")]
    Msg(String),
    /// `context: inner` (see [`Context`]).
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    pub fn msg(m: impl Display) -> Self {
        Error::Msg(m.to_string())
    }

    /// A parameter error: `name value: rule`.
    pub fn param(name: impl Display, value: impl Display, rule: impl Display) -> Self {
        Error::Param { name: name.to_string(), value: value.to_string(), rule: rule.to_string() }
    }

    /// The error under every [`Error::Context`] prefix.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.root(),
            e => e,
        }
    }

    /// This error with `context: ` in front.
    pub fn context(self, context: impl Display) -> Self {
        Error::Context { context: context.to_string(), inner: Box::new(self) }
    }
}

macro_rules! from_display {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Msg(e.to_string())
            }
        }
    )*};
}
from_display!(
    std::io::Error,
    tch::TchError,
    hdf5::Error,
    serde_json::Error,
    ndarray::ShapeError,
    toml::de::Error,
    zip::result::ZipError,
    std::num::ParseIntError,
    std::num::ParseFloatError,
    std::string::FromUtf8Error,
    std::str::Utf8Error,
    std::fmt::Error,
    String,
    &str,
);

impl From<scdd_core::error::CoreError> for Error {
    fn from(e: scdd_core::error::CoreError) -> Self {
        Error::Core(e)
    }
}

/// `anyhow::Context`'s two methods for the native [`Error`].
pub trait Context<T> {
    fn context<C: Display>(self, context: C) -> Result<T>;
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::msg(context))
    }
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::msg(f()))
    }
}

/// `return Err(Error::Msg(format!(...)))`, or `return Err(e.into())` for one expression.
macro_rules! bail {
    ($fmt:literal $($arg:tt)*) => {
        return Err($crate::error::Error::Msg(format!($fmt $($arg)*)))
    };
    ($e:expr) => {
        return Err($crate::error::Error::from($e))
    };
}

/// `Error::Msg(format!(...))`.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::error::Error::Msg(format!($($arg)*))
    };
}
pub(crate) use {bail, err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_typed_root() {
        let e: Result<()> = Err(Error::Interrupted { step: 3, checkpoint: "x.ckpt".into() });
        let e = e.context("stage a").context("dataset b").unwrap_err();
        assert_eq!(e.to_string(), "dataset b: stage a: stopped after step 3; checkpoint x.ckpt; continue with --resume");
        assert!(matches!(e.root(), Error::Interrupted { step: 3, .. }));
        let p = Error::param("--lr", f64::NAN, "must be a finite number > 0");
        assert_eq!(p.to_string(), "--lr NaN: must be a finite number > 0");
    }
}

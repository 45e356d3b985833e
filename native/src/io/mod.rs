//! Files: `.h5ad` reading and writing ([`h5ad`]), turning a file into model input ([`prep`]),
//! atomic outputs and output checks ([`fs`]), and the scdd artifacts (code files, bundles)
//! ([`artifacts`]), and what a file holds ([`describe`], `scdd inspect`); the static file
//! server of the browser page ([`serve`]).
pub mod artifacts;
pub mod describe;
pub mod fs;
pub mod h5ad;
pub mod prep;
pub mod serve;

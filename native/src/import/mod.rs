//! Importing foundation weights trained elsewhere: [`scimilarity`].
pub mod scimilarity;

//! tch building blocks: [`TchModel`] (every network of a bundle, built from the core's graph
//! spec), the optimisers ([`optim`]), the device choice ([`device`]) and seeded randomness
//! ([`rng`]).
pub mod device;
mod model;
pub mod optim;
pub mod rng;

pub use model::*;

//! A dataset: expression matrix + gene names + per-cell table.
use crate::error::{CoreError, Result};
use crate::matrix::CsrMatrix;
use crate::obs::ObsTable;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// A short name for provenance (usually the file stem).
    pub name: String,
    /// cells × genes.
    pub x: CsrMatrix,
    /// One name per column of `x`, unique.
    pub genes: Vec<String>,
    pub obs: ObsTable,
}

impl Dataset {
    /// Checks that the parts agree in size and that gene names are unique.
    pub fn new(name: impl Into<String>, x: CsrMatrix, genes: Vec<String>, obs: ObsTable) -> Result<Self> {
        let name = name.into();
        if genes.len() != x.n_cols() {
            return Err(CoreError::data(
                format!("{name}:var"),
                format!("{} gene names for {} columns of X", genes.len(), x.n_cols()),
            ));
        }
        if obs.n_rows() != x.n_rows() {
            return Err(CoreError::data(
                format!("{name}:obs"),
                format!("{} rows in obs for {} rows of X", obs.n_rows(), x.n_rows()),
            ));
        }
        for (n, c) in &obs.columns {
            if c.len() != obs.n_rows() {
                return Err(CoreError::data(
                    format!("{name}:obs/{n}"),
                    format!("has {} values, obs has {} rows", c.len(), obs.n_rows()),
                ));
            }
        }
        if let Some(d) = first_duplicate(&genes) {
            return Err(CoreError::data(format!("{name}:var"), format!("duplicate gene name {d:?}")));
        }
        Ok(Self { name, x, genes, obs })
    }

    pub fn n_cells(&self) -> usize {
        self.x.n_rows()
    }
    pub fn n_genes(&self) -> usize {
        self.x.n_cols()
    }

    /// The cells `rows`, in that order.
    pub fn select_cells(&self, rows: &[usize]) -> Dataset {
        Dataset { name: self.name.clone(), x: self.x.select_rows(rows), genes: self.genes.clone(), obs: self.obs.select(rows) }
    }

    /// The genes where `keep` is true.
    pub fn select_genes(&self, keep: &[bool]) -> Dataset {
        let genes = self.genes.iter().zip(keep).filter(|(_, &k)| k).map(|(g, _)| g.clone()).collect();
        Dataset { name: self.name.clone(), x: self.x.select_cols(keep), genes, obs: self.obs.clone() }
    }
}

/// The first name that occurs twice, if any.
pub fn first_duplicate(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.iter().find(|n| !seen.insert(n.as_str())).map(|s| s.as_str())
}

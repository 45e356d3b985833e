//! Per-cell annotations: an index plus named categorical, numeric and text columns.
use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Column {
    /// `codes[i]` indexes `categories`; `-1` marks a missing value (as in pandas).
    Categorical { codes: Vec<i32>, categories: Vec<String>, ordered: bool },
    Numeric(Vec<f64>),
    Text(Vec<String>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Categorical { codes, .. } => codes.len(),
            Column::Numeric(v) => v.len(),
            Column::Text(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn kind(&self) -> &'static str {
        match self {
            Column::Categorical { .. } => "categorical",
            Column::Numeric(_) => "numeric",
            Column::Text(_) => "text",
        }
    }
    /// Rows `rows` of this column, categories kept as they are.
    pub fn select(&self, rows: &[usize]) -> Column {
        match self {
            Column::Categorical { codes, categories, ordered } => Column::Categorical {
                codes: rows.iter().map(|&r| codes[r]).collect(),
                categories: categories.clone(),
                ordered: *ordered,
            },
            Column::Numeric(v) => Column::Numeric(rows.iter().map(|&r| v[r]).collect()),
            Column::Text(v) => Column::Text(rows.iter().map(|&r| v[r].clone()).collect()),
        }
    }
    /// Builds a categorical column from per-row labels, categories sorted.
    pub fn categorical_from_labels<S: AsRef<str>>(labels: &[S]) -> Column {
        let mut cats: Vec<String> = labels.iter().map(|s| s.as_ref().to_string()).collect();
        cats.sort();
        cats.dedup();
        let codes = labels
            .iter()
            .map(|s| cats.binary_search_by(|c| c.as_str().cmp(s.as_ref())).unwrap() as i32)
            .collect();
        Column::Categorical { codes, categories: cats, ordered: false }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObsTable {
    /// Cell identifiers (barcodes); same length as every column.
    pub index: Vec<String>,
    pub columns: Vec<(String, Column)>,
}

/// A label column resolved to dense class ids: what training and distillation consume.
#[derive(Clone, Debug, PartialEq)]
pub struct Labels {
    pub column: String,
    /// Class id per cell, `0..classes.len()`; cells with a missing label are `None`.
    pub ids: Vec<Option<u32>>,
    pub classes: Vec<String>,
}

impl Labels {
    /// Cells per class.
    pub fn counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for id in self.ids.iter().flatten() {
            c[*id as usize] += 1;
        }
        c
    }
}

impl ObsTable {
    pub fn n_rows(&self) -> usize {
        self.index.len()
    }

    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Adds or replaces a column; its length must equal the number of rows.
    pub fn set(&mut self, name: &str, col: Column) -> Result<()> {
        if col.len() != self.n_rows() {
            return Err(CoreError::data(
                format!("obs/{name}"),
                format!("has {} rows, the table has {}", col.len(), self.n_rows()),
            ));
        }
        match self.columns.iter_mut().find(|(n, _)| n == name) {
            Some((_, c)) => *c = col,
            None => self.columns.push((name.to_string(), col)),
        }
        Ok(())
    }

    pub fn select(&self, rows: &[usize]) -> ObsTable {
        ObsTable {
            index: rows.iter().map(|&r| self.index[r].clone()).collect(),
            columns: self.columns.iter().map(|(n, c)| (n.clone(), c.select(rows))).collect(),
        }
    }

    /// Resolves `name` as a label column. Categorical columns keep only the categories that
    /// occur (in their original order); text columns are categorised (sorted). Numeric columns
    /// are refused: a label must be categorical. The error lists the columns that exist.
    pub fn labels(&self, name: &str) -> Result<Labels> {
        let col = self.get(name).ok_or_else(|| {
            CoreError::data(
                format!("obs/{name}"),
                format!("no such column; obs has: {}", self.describe_columns()),
            )
        })?;
        let (codes, categories) = match col {
            Column::Categorical { codes, categories, .. } => (codes.clone(), categories.clone()),
            Column::Text(v) => match Column::categorical_from_labels(v) {
                Column::Categorical { codes, categories, .. } => (codes, categories),
                _ => unreachable!(),
            },
            Column::Numeric(_) => {
                return Err(CoreError::data(
                    format!("obs/{name}"),
                    format!(
                        "is numeric, not categorical; a label column must be categorical. Columns: {}",
                        self.describe_columns()
                    ),
                ))
            }
        };
        let mut used = vec![false; categories.len()];
        for &c in &codes {
            if c >= 0 {
                let c = c as usize;
                if c >= categories.len() {
                    return Err(CoreError::data(
                        format!("obs/{name}/codes"),
                        format!("code {c} is out of range ({} categories)", categories.len()),
                    ));
                }
                used[c] = true;
            }
        }
        let mut remap = vec![u32::MAX; categories.len()];
        let mut classes = Vec::new();
        for (i, cat) in categories.iter().enumerate() {
            if used[i] {
                remap[i] = classes.len() as u32;
                classes.push(cat.clone());
            }
        }
        let ids = codes.iter().map(|&c| if c < 0 { None } else { Some(remap[c as usize]) }).collect();
        Ok(Labels { column: name.to_string(), ids, classes })
    }

    /// `name (kind)` for every column, comma-separated, for error messages.
    pub fn describe_columns(&self) -> String {
        if self.columns.is_empty() {
            return "(no columns)".into();
        }
        self.columns.iter().map(|(n, c)| format!("{n} ({})", c.kind())).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_drop_unused_categories_and_keep_missing() {
        let mut t = ObsTable { index: vec!["a".into(), "b".into(), "c".into()], columns: vec![] };
        t.set(
            "ct",
            Column::Categorical { codes: vec![2, -1, 2], categories: vec!["x".into(), "y".into(), "z".into()], ordered: false },
        )
        .unwrap();
        t.set("n", Column::Numeric(vec![1.0, 2.0, 3.0])).unwrap();
        let l = t.labels("ct").unwrap();
        assert_eq!(l.classes, vec!["z".to_string()]);
        assert_eq!(l.ids, vec![Some(0), None, Some(0)]);
        let e = t.labels("nope").unwrap_err().to_string();
        assert!(e.contains("ct (categorical)") && e.contains("n (numeric)"), "{e}");
        assert!(t.labels("n").unwrap_err().to_string().contains("is numeric"));
    }
}

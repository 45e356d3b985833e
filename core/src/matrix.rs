//! A compressed-sparse-row expression matrix (cells × genes, f32 values).
//!
//! Whole datasets stay sparse: only the rows a batch needs are ever densified
//! ([`CsrMatrix::dense_rows`]).
use crate::error::{CoreError, Result};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CsrMatrix {
    n_rows: usize,
    n_cols: usize,
    /// Row pointers, `n_rows + 1` entries, non-decreasing, last = nnz.
    indptr: Vec<u64>,
    /// Column index of each stored value, `< n_cols`, strictly increasing within a row.
    indices: Vec<u32>,
    data: Vec<f32>,
}

impl CsrMatrix {
    /// Builds a matrix after checking every structural invariant; `field` names the source
    /// (e.g. `"file.h5ad:X"`) in errors. Unsorted column indices within a row are sorted;
    /// duplicates are an error.
    pub fn new(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<u64>,
        mut indices: Vec<u32>,
        mut data: Vec<f32>,
        field: &str,
    ) -> Result<Self> {
        if indptr.len() != n_rows + 1 {
            return Err(CoreError::data(
                format!("{field}/indptr"),
                format!("has {} entries, expected n_rows + 1 = {}", indptr.len(), n_rows + 1),
            ));
        }
        if indices.len() != data.len() {
            return Err(CoreError::data(
                format!("{field}/indices"),
                format!("has {} entries but data has {}", indices.len(), data.len()),
            ));
        }
        if indptr[0] != 0 {
            return Err(CoreError::data(format!("{field}/indptr"), format!("starts at {}, expected 0", indptr[0])));
        }
        let nnz = data.len() as u64;
        if indptr[n_rows] != nnz {
            return Err(CoreError::data(
                format!("{field}/indptr"),
                format!("ends at {}, but there are {} stored values", indptr[n_rows], nnz),
            ));
        }
        for r in 0..n_rows {
            let (a, b) = (indptr[r], indptr[r + 1]);
            if b < a {
                return Err(CoreError::data(
                    format!("{field}/indptr"),
                    format!("decreases at row {r} ({a} -> {b})"),
                ));
            }
            let (a, b) = (a as usize, b as usize);
            let row = &indices[a..b];
            if let Some(&bad) = row.iter().find(|&&c| c as usize >= n_cols) {
                return Err(CoreError::data(
                    format!("{field}/indices"),
                    format!("column index {bad} in row {r} is out of range (n_cols = {n_cols})"),
                ));
            }
            if row.windows(2).any(|w| w[0] >= w[1]) {
                // sort (index, value) pairs of this row, then check for duplicates
                let mut pairs: Vec<(u32, f32)> = row.iter().copied().zip(data[a..b].iter().copied()).collect();
                pairs.sort_by_key(|p| p.0);
                if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
                    return Err(CoreError::data(
                        format!("{field}/indices"),
                        format!("duplicate column index {} in row {r}", w[0].0),
                    ));
                }
                for (k, (c, v)) in pairs.into_iter().enumerate() {
                    indices[a + k] = c;
                    data[a + k] = v;
                }
            }
        }
        if let Some(pos) = data.iter().position(|v| !v.is_finite()) {
            let row = indptr.partition_point(|&p| p <= pos as u64) - 1;
            return Err(CoreError::data(
                format!("{field}/data"),
                format!("non-finite value {} at row {row}, column {}", data[pos], indices[pos]),
            ));
        }
        Ok(Self { n_rows, n_cols, indptr, indices, data })
    }

    /// A matrix from a row-major dense buffer (zeros dropped).
    pub fn from_dense(n_rows: usize, n_cols: usize, values: &[f32], field: &str) -> Result<Self> {
        if values.len() != n_rows * n_cols {
            return Err(CoreError::data(
                field,
                format!("dense buffer has {} values, expected {n_rows} × {n_cols}", values.len()),
            ));
        }
        let mut indptr = Vec::with_capacity(n_rows + 1);
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        indptr.push(0u64);
        for r in 0..n_rows {
            for (c, &v) in values[r * n_cols..(r + 1) * n_cols].iter().enumerate() {
                if v != 0.0 {
                    indices.push(c as u32);
                    data.push(v);
                }
            }
            indptr.push(data.len() as u64);
        }
        Self::new(n_rows, n_cols, indptr, indices, data, field)
    }

    /// Builds from compressed-sparse-column arrays (converted to CSR, O(nnz)).
    pub fn from_csc(
        n_rows: usize,
        n_cols: usize,
        colptr: &[u64],
        row_indices: &[u32],
        values: &[f32],
        field: &str,
    ) -> Result<Self> {
        if colptr.len() != n_cols + 1 {
            return Err(CoreError::data(
                format!("{field}/indptr"),
                format!("has {} entries, expected n_cols + 1 = {} for a CSC matrix", colptr.len(), n_cols + 1),
            ));
        }
        if row_indices.len() != values.len() || colptr[n_cols] as usize != values.len() {
            return Err(CoreError::data(
                format!("{field}/indptr"),
                format!("ends at {} but there are {} indices and {} values", colptr[n_cols], row_indices.len(), values.len()),
            ));
        }
        let mut counts = vec![0u64; n_rows + 1];
        for &r in row_indices {
            if r as usize >= n_rows {
                return Err(CoreError::data(
                    format!("{field}/indices"),
                    format!("row index {r} is out of range (n_rows = {n_rows})"),
                ));
            }
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; values.len()];
        let mut data = vec![0f32; values.len()];
        for c in 0..n_cols {
            let (a, b) = (colptr[c] as usize, colptr[c + 1] as usize);
            if b < a || b > values.len() {
                return Err(CoreError::data(format!("{field}/indptr"), format!("invalid range {a}..{b} at column {c}")));
            }
            for k in a..b {
                let r = row_indices[k] as usize;
                let dst = next[r] as usize;
                indices[dst] = c as u32;
                data[dst] = values[k];
                next[r] += 1;
            }
        }
        Self::new(n_rows, n_cols, indptr, indices, data, field)
    }

    pub fn n_rows(&self) -> usize {
        self.n_rows
    }
    pub fn n_cols(&self) -> usize {
        self.n_cols
    }
    pub fn nnz(&self) -> usize {
        self.data.len()
    }
    pub fn indptr(&self) -> &[u64] {
        &self.indptr
    }
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// Mutable access to the stored values (the structure cannot change).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// Fraction of entries that are zero.
    pub fn sparsity(&self) -> f64 {
        let total = self.n_rows as f64 * self.n_cols as f64;
        if total == 0.0 { 0.0 } else { 1.0 - self.nnz() as f64 / total }
    }

    /// Column indices and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r] as usize, self.indptr[r + 1] as usize);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Sum of each row.
    pub fn row_sums(&self) -> Vec<f64> {
        (0..self.n_rows).map(|r| self.row(r).1.iter().map(|&v| v as f64).sum()).collect()
    }

    /// Number of non-zero entries in each column.
    pub fn col_nnz(&self) -> Vec<u64> {
        let mut counts = vec![0u64; self.n_cols];
        for (&c, &v) in self.indices.iter().zip(&self.data) {
            if v != 0.0 {
                counts[c as usize] += 1;
            }
        }
        counts
    }

    /// The rows `rows` (in that order, repeats allowed) as a new matrix.
    pub fn select_rows(&self, rows: &[usize]) -> CsrMatrix {
        let nnz: usize = rows.iter().map(|&r| (self.indptr[r + 1] - self.indptr[r]) as usize).sum();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        indptr.push(0);
        for &r in rows {
            let (i, v) = self.row(r);
            indices.extend_from_slice(i);
            data.extend_from_slice(v);
            indptr.push(indices.len() as u64);
        }
        CsrMatrix { n_rows: rows.len(), n_cols: self.n_cols, indptr, indices, data }
    }

    /// Keeps the columns where `keep[c]` is true, renumbering them in order.
    pub fn select_cols(&self, keep: &[bool]) -> CsrMatrix {
        assert_eq!(keep.len(), self.n_cols, "select_cols: mask length must equal n_cols");
        let mut new_index = vec![u32::MAX; self.n_cols];
        let mut n = 0u32;
        for (c, &k) in keep.iter().enumerate() {
            if k {
                new_index[c] = n;
                n += 1;
            }
        }
        self.remap_cols(&new_index, n as usize)
    }

    /// Keeps the rows where `keep_rows[r]` and the columns where `keep_cols[c]` is true, in
    /// place: one pass over the arrays, no second copy of the matrix (what QC on a large
    /// dataset needs). Equivalent to `select_rows(kept).select_cols(keep_cols)`.
    pub fn retain(&mut self, keep_rows: &[bool], keep_cols: &[bool]) {
        assert_eq!(keep_rows.len(), self.n_rows, "retain: row mask length must equal n_rows");
        assert_eq!(keep_cols.len(), self.n_cols, "retain: column mask length must equal n_cols");
        let mut new_index = vec![u32::MAX; self.n_cols];
        let mut n_cols = 0u32;
        for (c, &k) in keep_cols.iter().enumerate() {
            if k {
                new_index[c] = n_cols;
                n_cols += 1;
            }
        }
        let all_cols = n_cols as usize == self.n_cols;
        let (mut w, mut r_out) = (0usize, 0usize);
        let mut start = 0usize; // old start of row r (indptr[r] may already be overwritten)
        for (r, &keep) in keep_rows.iter().enumerate() {
            let end = self.indptr[r + 1] as usize;
            if keep {
                if all_cols {
                    self.indices.copy_within(start..end, w);
                    self.data.copy_within(start..end, w);
                    w += end - start;
                } else {
                    for k in start..end {
                        let m = new_index[self.indices[k] as usize];
                        if m != u32::MAX {
                            // w <= k: never overwrites an entry not yet read
                            self.indices[w] = m;
                            self.data[w] = self.data[k];
                            w += 1;
                        }
                    }
                }
                r_out += 1;
                self.indptr[r_out] = w as u64;
            }
            start = end;
        }
        self.indptr.truncate(r_out + 1);
        self.indices.truncate(w);
        self.data.truncate(w);
        self.n_rows = r_out;
        self.n_cols = n_cols as usize;
    }

    /// Moves column `c` to `map[c]` (or drops it when `map[c] == u32::MAX`), giving a matrix
    /// with `n_cols` columns. Used for gene alignment to a reference list.
    pub fn remap_cols(&self, map: &[u32], n_cols: usize) -> CsrMatrix {
        let mut indptr = Vec::with_capacity(self.n_rows + 1);
        let mut indices = Vec::with_capacity(self.nnz());
        let mut data = Vec::with_capacity(self.nnz());
        indptr.push(0);
        let mut row_buf: Vec<(u32, f32)> = Vec::new();
        for r in 0..self.n_rows {
            row_buf.clear();
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                let m = map[c as usize];
                if m != u32::MAX {
                    row_buf.push((m, v));
                }
            }
            row_buf.sort_unstable_by_key(|p| p.0);
            for &(c, v) in &row_buf {
                indices.push(c);
                data.push(v);
            }
            indptr.push(indices.len() as u64);
        }
        CsrMatrix { n_rows: self.n_rows, n_cols, indptr, indices, data }
    }

    /// Densifies the given rows into a `rows.len() × n_cols` array (a training batch).
    pub fn dense_rows(&self, rows: &[usize]) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((rows.len(), self.n_cols));
        for (i, &r) in rows.iter().enumerate() {
            let (idx, val) = self.row(r);
            let mut dst = out.row_mut(i);
            for (&c, &v) in idx.iter().zip(val) {
                dst[c as usize] = v;
            }
        }
        out
    }

    /// All rows dense; only for small matrices (synthetic sets, tests).
    pub fn to_dense(&self) -> Array2<f32> {
        let rows: Vec<usize> = (0..self.n_rows).collect();
        self.dense_rows(&rows)
    }

    /// Bytes held by the three CSR arrays.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * 8 + self.indices.len() * 4 + self.data.len() * 4
    }

    /// Stacks matrices with the same number of columns vertically.
    pub fn vstack(parts: &[&CsrMatrix]) -> Result<CsrMatrix> {
        let n_cols = parts.first().map(|m| m.n_cols).unwrap_or(0);
        let mut indptr = vec![0u64];
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        let mut n_rows = 0;
        for m in parts {
            if m.n_cols != n_cols {
                return Err(CoreError::data("vstack", format!("column counts differ: {} vs {}", m.n_cols, n_cols)));
            }
            let base = data.len() as u64;
            indptr.extend(m.indptr[1..].iter().map(|p| p + base));
            indices.extend_from_slice(&m.indices);
            data.extend_from_slice(&m.data);
            n_rows += m.n_rows;
        }
        Ok(CsrMatrix { n_rows, n_cols, indptr, indices, data })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> CsrMatrix {
        // [[1 0 2], [0 0 0], [0 3 0]]
        CsrMatrix::new(3, 3, vec![0, 2, 2, 3], vec![0, 2, 1], vec![1., 2., 3.], "t").unwrap()
    }

    #[test]
    fn dense_round_trip() {
        let m = small();
        let d = m.to_dense();
        let back = CsrMatrix::from_dense(3, 3, d.as_slice().unwrap(), "t").unwrap();
        assert_eq!(m, back);
        assert_eq!(m.row_sums(), vec![3.0, 0.0, 3.0]);
        assert_eq!(m.col_nnz(), vec![1, 1, 1]);
    }

    #[test]
    fn csc_conversion_matches() {
        // same matrix in CSC: columns [ (0:1) ], [ (2:3) ], [ (0:2) ]
        let m = CsrMatrix::from_csc(3, 3, &[0, 1, 2, 3], &[0, 2, 0], &[1., 3., 2.], "t").unwrap();
        assert_eq!(m, small());
    }

    #[test]
    fn rejects_bad_structure() {
        let e = CsrMatrix::new(2, 3, vec![0, 1], vec![0], vec![1.], "f.h5ad:X").unwrap_err().to_string();
        assert!(e.contains("f.h5ad:X/indptr") && e.contains("expected n_rows + 1 = 3"), "{e}");
        let e = CsrMatrix::new(1, 3, vec![0, 1], vec![5], vec![1.], "X").unwrap_err().to_string();
        assert!(e.contains("column index 5 in row 0 is out of range"), "{e}");
        let e = CsrMatrix::new(1, 3, vec![0, 2], vec![1, 1], vec![1., 1.], "X").unwrap_err().to_string();
        assert!(e.contains("duplicate column index 1"), "{e}");
        let e = CsrMatrix::new(1, 3, vec![0, 1], vec![1], vec![f32::NAN], "X").unwrap_err().to_string();
        assert!(e.contains("non-finite"), "{e}");
    }

    #[test]
    fn unsorted_rows_are_sorted() {
        let m = CsrMatrix::new(1, 3, vec![0, 2], vec![2, 0], vec![2., 1.], "t").unwrap();
        assert_eq!(m.indices(), &[0, 2]);
        assert_eq!(m.data(), &[1., 2.]);
    }

    #[test]
    fn select_and_remap() {
        let m = small();
        let s = m.select_rows(&[2, 0]);
        assert_eq!(s.to_dense().as_slice().unwrap(), &[0., 3., 0., 1., 0., 2.]);
        let c = m.select_cols(&[true, false, true]);
        assert_eq!(c.to_dense().as_slice().unwrap(), &[1., 2., 0., 0., 0., 0.]);
        // in place
        let mut inplace = m.clone();
        inplace.retain(&[true, false, true], &[true, false, true]);
        assert_eq!(inplace, m.select_rows(&[0, 2]).select_cols(&[true, false, true]));
        let mut rows_only = m.clone();
        rows_only.retain(&[false, true, true], &[true; 3]);
        assert_eq!(rows_only, m.select_rows(&[1, 2]));
        let mut none = m.clone();
        none.retain(&[false; 3], &[true, true, false]);
        assert_eq!((none.n_rows(), none.n_cols(), none.nnz(), none.indptr()), (0, 2, 0, &[0u64][..]));
        // reverse the columns and add one empty column
        let r = m.remap_cols(&[3, 1, 0], 4);
        assert_eq!(r.to_dense().row(0).to_vec(), vec![2., 0., 0., 1.]);
    }
}

//! The real side of matching. The foundation encoder F is frozen, so real cells enter DM and DC
//! only through their features F(o). One streaming pass over the training file computes them
//! chunk by chunk into an on-disk feature store (cells × latent f32) together with exact class
//! means; every later step samples feature rows per class by index from that store. Memory
//! grows with the chunk and the batch, not with the dataset.
use crate::io::h5ad::{H5adReader, ReadOptions};
use crate::error::{bail, Context, Result};
use scdd_core::graph::ExpressionSpace;
use scdd_core::matrix::CsrMatrix;
use scdd_core::preprocess;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Rows of the training file read and encoded at a time.
pub const CHUNK_ROWS: usize = 2048;
/// Rows sampled (evenly spaced) to detect what the file holds.
const DETECT_ROWS: usize = 2000;

/// Reads training cells by row and turns them into model input (log-normalised, genes in the
/// model's order).
pub struct CellSource {
    pub reader: H5adReader,
    /// Data column → model column (`u32::MAX`: not a model gene).
    map: Vec<u32>,
    n_model_genes: usize,
    space: ExpressionSpace,
    pub overlap: usize,
    /// What the file holds, detected once on evenly spaced rows of the whole file.
    pub kind: preprocess::CountType,
    field: String,
}

impl CellSource {
    pub fn open(path: &Path, opts: &ReadOptions, model_genes: &[String], space: &ExpressionSpace) -> Result<Self> {
        let reader = H5adReader::open(path, opts)?;
        let genes = reader.read_genes()?;
        let pos: std::collections::HashMap<&str, u32> =
            model_genes.iter().enumerate().map(|(i, g)| (g.as_str(), i as u32)).collect();
        let map: Vec<u32> = genes.iter().map(|g| pos.get(g.as_str()).copied().unwrap_or(u32::MAX)).collect();
        let overlap = map.iter().filter(|&&m| m != u32::MAX).count();
        let need = crate::io::prep::min_overlap(model_genes.len());
        if overlap < need {
            bail!(
                "{}: only {overlap} of the model's {} genes are in the data (minimum {need})",
                path.display(),
                model_genes.len()
            );
        }
        let field = format!("{}:{}", path.display(), opts.matrix);
        let n = reader.n_rows();
        let sample: Vec<usize> = (0..n).step_by((n / DETECT_ROWS).max(1)).collect();
        let mut x = reader.read_row_indices(&sample)?;
        preprocess::check_non_negative(&x, &field)?;
        let kind = preprocess::detect_count_type(&x);
        // Refuses scaled values and values of unknown normalisation here, naming the file.
        preprocess::to_log_normalized_as(&mut x, &kind, space.target_sum, &field)?;
        Ok(CellSource { reader, map, n_model_genes: model_genes.len(), space: space.clone(), overlap, kind, field })
    }

    fn prepare(&self, mut x: CsrMatrix) -> Result<CsrMatrix> {
        preprocess::check_non_negative(&x, &self.field)?;
        preprocess::to_log_normalized_as(&mut x, &self.kind, self.space.target_sum, &self.field)?;
        Ok(x.remap_cols(&self.map, self.n_model_genes))
    }

    /// Model input for the given rows (any order).
    pub fn rows(&self, rows: &[usize]) -> Result<CsrMatrix> {
        self.prepare(self.reader.read_row_indices(rows)?)
    }

    /// Genes per cell of the model input.
    pub fn n_genes(&self) -> usize {
        self.n_model_genes
    }

    /// Model input for a contiguous range.
    pub fn range(&self, rows: std::ops::Range<usize>) -> Result<CsrMatrix> {
        self.prepare(self.reader.read_rows(rows)?)
    }
}

/// Features held in memory when the whole store is at most this large; larger stores are
/// read by row from the file (memory then grows with the batch, not the dataset).
pub const IN_MEMORY_BYTES: usize = 256 << 20;

/// Encoder features of every training cell, on disk (and in memory when small, see
/// [`IN_MEMORY_BYTES`]), plus per-class bookkeeping.
pub struct FeatureStore {
    path: PathBuf,
    file: File,
    /// The whole store, when it is small enough to keep.
    memory: Option<Vec<f32>>,
    pub dim: usize,
    pub n_rows: usize,
    /// Exact per-class mean feature over all cells of the class.
    pub class_means: Vec<Vec<f32>>,
    /// Rows of each class.
    pub class_rows: Vec<Vec<usize>>,
    /// Mean L2 norm of the features: matching divides every feature by it, so losses and step
    /// sizes do not depend on the encoder's output scale.
    pub mean_norm: f64,
}

impl FeatureStore {
    /// Streams `source` in chunks through `encode` (cells → features), writing `path`.
    /// `class_of[r]` is the class id of row r (`None`: unlabelled, skipped in means).
    pub fn build(
        source: &CellSource,
        class_of: &[Option<u32>],
        n_classes: usize,
        dim: usize,
        path: &Path,
        mut encode: impl FnMut(&CsrMatrix) -> Result<Vec<f32>>,
        mut progress: impl FnMut(u64),
    ) -> Result<Self> {
        let n = source.reader.n_rows();
        let tmp = crate::io::fs::temp_sibling(path);
        let mut w = BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
        let mut sums = vec![vec![0f64; dim]; n_classes];
        let mut class_rows = vec![Vec::new(); n_classes];
        for (r, c) in class_of.iter().enumerate() {
            if let Some(c) = c {
                class_rows[*c as usize].push(r);
            }
        }
        let mut norm_sum = 0f64;
        // A small store is also kept as it is written (no second pass over the file).
        let mut memory = (n * dim * 4 <= IN_MEMORY_BYTES).then(|| Vec::with_capacity(n * dim));
        let mut start = 0;
        while start < n {
            let end = (start + CHUNK_ROWS).min(n);
            let x = source.range(start..end)?;
            let f = encode(&x)?;
            if f.len() != (end - start) * dim {
                bail!("encoder returned {} values for {} rows of width {dim}", f.len(), end - start);
            }
            for (k, row) in f.chunks_exact(dim).enumerate() {
                norm_sum += row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>().sqrt();
                if let Some(c) = class_of[start + k] {
                    for (s, v) in sums[c as usize].iter_mut().zip(row) {
                        *s += *v as f64;
                    }
                }
                for v in row {
                    w.write_all(&v.to_le_bytes())?;
                }
            }
            if let Some(m) = memory.as_mut() {
                m.extend_from_slice(&f);
            }
            progress((end - start) as u64);
            start = end;
        }
        w.flush()?;
        drop(w);
        std::fs::rename(&tmp, path)?;
        let class_means = sums
            .iter()
            .zip(&class_rows)
            .map(|(s, rows)| s.iter().map(|v| (v / rows.len().max(1) as f64) as f32).collect())
            .collect();
        let file = File::open(path)?;
        let mean_norm = if n > 0 && norm_sum > 0.0 { norm_sum / n as f64 } else { 1.0 };
        Ok(FeatureStore { path: path.to_path_buf(), file, memory, dim, n_rows: n, class_means, class_rows, mean_norm })
    }

    /// Feature rows `rows`, row-major.
    pub fn read(&self, rows: &[usize]) -> Result<Vec<f32>> {
        if let Some(m) = &self.memory {
            let mut out = Vec::with_capacity(rows.len() * self.dim);
            for &r in rows {
                let row = m.get(r * self.dim..(r + 1) * self.dim).with_context(|| format!("feature row {r} is beyond the store"))?;
                out.extend_from_slice(row);
            }
            return Ok(out);
        }
        let mut out = vec![0f32; rows.len() * self.dim];
        let mut buf = vec![0u8; self.dim * 4];
        for (k, &r) in rows.iter().enumerate() {
            self.file
                .read_exact_at(&mut buf, (r * self.dim * 4) as u64)
                .with_context(|| format!("reading feature row {r} from {}", self.path.display()))?;
            for (d, b) in out[k * self.dim..(k + 1) * self.dim].iter_mut().zip(buf.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Ok(out)
    }

    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

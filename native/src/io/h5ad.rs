//! Reading and writing AnnData `.h5ad` files (HDF5) without Python.
//!
//! Reading understands the layouts that occur in practice:
//!
//! * the expression matrix as a dense 2-D dataset, or a CSR / CSC group (anndata ≥ 0.7:
//!   `encoding-type` = `csr_matrix`/`csc_matrix` and a `shape` attribute; older files:
//!   `h5sparse_format` and `h5sparse_shape`), any integer or float dtype (read as `f32`),
//!   32- or 64-bit indices and pointers;
//! * the matrix in `X`, in a layer (`layers/<name>`) or in `raw/X` (legacy: `raw.X`), the gene
//!   names then coming from `raw/var` (legacy: `raw.var`);
//! * data frames (`obs`, `var`) in the anndata ≥ 0.8 encoding (categoricals as `codes` +
//!   `categories` groups, nullable integers/booleans as `values` + `mask`), the 0.7 encoding
//!   (`__categories/<col>` next to integer codes) and the pre-0.7 compound-dataset encoding
//!   (categories in `uns/<col>_categories`);
//! * strings stored as variable-length UTF-8, variable-length ASCII or fixed-length ASCII.
//!
//! [`H5adReader`] opens a file once and reads row ranges or scattered rows of a CSR matrix by
//! hyperslab selection, so a large file can be streamed without loading the whole matrix.
//!
//! [`write_h5ad`] writes a CSR matrix, `obs`, `var` and string metadata in `uns` in the
//! anndata 0.8+ encoding (opened by `anndata.read_h5ad` without warnings), atomically.
//!
//! Every error is one line that names the file, the HDF5 field and the offending value.
use crate::error::{err, bail, Context, Result};
use hdf5::types::{CompoundField, CompoundType, FloatSize, IntSize, TypeDescriptor as TD, VarLenAscii, VarLenUnicode};
use hdf5::{Hyperslab, Location, LocationType, Selection, SliceOrIndex};
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::{Column, ObsTable};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

// ------------------------------------------------------------------------------------------
// Options and metadata
// ------------------------------------------------------------------------------------------

/// Which matrix of the file to read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MatrixSource {
    /// `X` (the default).
    #[default]
    X,
    /// `layers/<name>`.
    Layer(String),
    /// `raw/X` (or the legacy `raw.X`); gene names come from `raw/var`.
    Raw,
}

impl MatrixSource {
    /// The CLI's `--layer NAME` / `--raw` flags as a source (`--raw` wins if both are given;
    /// clap makes them exclusive anyway).
    pub fn from_flags(layer: Option<&str>, raw: bool) -> Self {
        match (raw, layer) {
            (true, _) => MatrixSource::Raw,
            (false, Some(name)) => MatrixSource::Layer(name.to_string()),
            (false, None) => MatrixSource::X,
        }
    }
}

impl std::fmt::Display for MatrixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixSource::X => write!(f, "X"),
            MatrixSource::Layer(n) => write!(f, "layers/{n}"),
            MatrixSource::Raw => write!(f, "raw/X"),
        }
    }
}

/// What [`read_h5ad`] and [`H5adReader`] read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub matrix: MatrixSource,
    /// Take gene names from this `var` column instead of the `var` index (e.g. when the index
    /// holds Ensembl ids and a column holds symbols).
    pub gene_symbols: Option<String>,
}

/// Which matrix of a file to read and where gene names come from, as the CLI flags
/// (`--layer`, `--raw`, `--gene-symbols`) and the pipeline config's dataset keys give it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatrixSpec {
    /// Read `layers/NAME` instead of X.
    pub layer: Option<String>,
    /// Read `raw/X` instead of X (gene names from `raw/var`).
    pub raw: bool,
    /// Gene names from this var column instead of the var index.
    pub gene_symbols: Option<String>,
}

impl MatrixSpec {
    /// Refuses `layer` together with `raw`.
    pub fn check(&self) -> Result<()> {
        if self.raw && self.layer.is_some() {
            return Err(crate::Error::param("--layer", self.layer.as_deref().unwrap_or(""), "give either --layer or --raw, not both"));
        }
        Ok(())
    }
    pub fn source(&self) -> MatrixSource {
        MatrixSource::from_flags(self.layer.as_deref(), self.raw)
    }
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions { matrix: self.source(), gene_symbols: self.gene_symbols.clone() }
    }
}

impl ReadOptions {
    /// Reads `matrix`, genes from the `var` index.
    pub fn matrix(matrix: MatrixSource) -> Self {
        ReadOptions { matrix, gene_symbols: None }
    }
}

/// Storage layout of the expression matrix in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixFormat {
    Csr,
    Csc,
    Dense,
}

impl std::fmt::Display for MatrixFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MatrixFormat::Csr => "csr",
            MatrixFormat::Csc => "csc",
            MatrixFormat::Dense => "dense",
        })
    }
}

/// The expression matrix's metadata, known after opening.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatrixInfo {
    /// HDF5 path of the matrix (`X`, `layers/counts`, `raw/X`, `raw.X`).
    pub path: String,
    pub n_rows: usize,
    pub n_cols: usize,
    pub format: MatrixFormat,
    /// Stored values (for dense: `n_rows × n_cols`).
    pub stored: u64,
    /// The on-disk value dtype (`float32`, `int64`, ...).
    pub dtype: String,
}

// ------------------------------------------------------------------------------------------
// Reader
// ------------------------------------------------------------------------------------------

/// An open `.h5ad` file with its expression matrix located and its row pointers in memory.
///
/// For CSR matrices [`read_rows`](Self::read_rows) and
/// [`read_row_indices`](Self::read_row_indices) read only the needed part of `indices` and
/// `data`. For dense matrices they read the needed rows. A CSC matrix has no cheap row
/// access: the first row read converts the whole matrix once and keeps it.
pub struct H5adReader {
    path: PathBuf,
    file: hdf5::File,
    opts: ReadOptions,
    info: MatrixInfo,
    store: Store,
    csc_cache: OnceLock<CsrMatrix>,
}

enum Store {
    Sparse {
        data: hdf5::Dataset,
        indices: hdf5::Dataset,
        /// Validated pointers (`n_rows + 1` for CSR, `n_cols + 1` for CSC).
        indptr: Vec<u64>,
    },
    Dense(hdf5::Dataset),
}

/// Merge two runs of wanted rows when fewer than this many stored values lie between them:
/// one larger read is cheaper than two HDF5 calls.
const MERGE_GAP_VALUES: u64 = 1 << 16;
/// Indices are read in chunks of this many entries (read as `i64`, checked, kept as `u32`).
const INDEX_CHUNK: usize = 1 << 22;

impl H5adReader {
    /// Opens `path` and locates the matrix selected by `opts`.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let file = open_file(path)?;
        let (info, store) = locate_matrix(&file, &opts.matrix).with_context(|| path.display().to_string())?;
        Ok(H5adReader { path: path.to_path_buf(), file, opts: opts.clone(), info, store, csc_cache: OnceLock::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn info(&self) -> &MatrixInfo {
        &self.info
    }
    pub fn n_rows(&self) -> usize {
        self.info.n_rows
    }
    pub fn n_cols(&self) -> usize {
        self.info.n_cols
    }
    pub fn format(&self) -> MatrixFormat {
        self.info.format
    }

    /// Adds the file name in front of an error.
    fn ctx<T>(&self, r: Result<T>) -> Result<T> {
        r.with_context(|| self.path.display().to_string())
    }

    /// The whole matrix.
    pub fn read_matrix(&self) -> Result<CsrMatrix> {
        if self.info.format == MatrixFormat::Csc {
            // Convert without keeping a cached copy (unless rows were read before).
            return match self.csc_cache.get() {
                Some(m) => Ok(m.clone()),
                None => self.ctx(self.read_csc()),
            };
        }
        self.read_rows(0..self.info.n_rows)
    }

    /// Rows `rows` (a contiguous range) as a CSR matrix.
    pub fn read_rows(&self, rows: Range<usize>) -> Result<CsrMatrix> {
        self.ctx(self.read_rows_inner(rows))
    }

    fn read_rows_inner(&self, rows: Range<usize>) -> Result<CsrMatrix> {
        let info = &self.info;
        if rows.start > rows.end || rows.end > info.n_rows {
            bail!("{}: row range {}..{} is out of bounds (n_rows = {})", info.path, rows.start, rows.end, info.n_rows);
        }
        match (&self.store, info.format) {
            (Store::Sparse { data, indices, indptr }, MatrixFormat::Csr) => {
                let (p0, p1) = (indptr[rows.start], indptr[rows.end]);
                let (idx, vals) = self.read_sparse_range(data, indices, p0 as usize..p1 as usize)?;
                let ptr: Vec<u64> = indptr[rows.start..=rows.end].iter().map(|p| p - p0).collect();
                Ok(CsrMatrix::new(rows.len(), info.n_cols, ptr, idx, vals, &info.path)?)
            }
            (Store::Dense(ds), _) => {
                if rows.is_empty() || info.n_cols == 0 {
                    return Ok(CsrMatrix::from_dense(rows.len(), info.n_cols, &[], &info.path)?);
                }
                let sel = Hyperslab::from(vec![SliceOrIndex::from(rows.clone()), SliceOrIndex::from(0..info.n_cols)]);
                let arr = h5(ds.read_slice_2d::<f32, _>(Selection::from(sel)), &info.path)?;
                // HDF5 reads build standard-layout arrays from offset 0: the buffer is row-major.
                let (values, _) = arr.into_raw_vec_and_offset();
                Ok(CsrMatrix::from_dense(rows.len(), info.n_cols, &values, &info.path)?)
            }
            (Store::Sparse { .. }, _) => {
                let whole = self.csc_whole()?;
                let idx: Vec<usize> = rows.collect();
                Ok(whole.select_rows(&idx))
            }
        }
    }

    /// Whether large reads of this sparse matrix take the direct path (see
    /// [`read_sparse_range`](Self::read_sparse_range)): contiguous, unfiltered, 32-bit
    /// little-endian indices and float32 values.
    pub fn direct_reads(&self) -> bool {
        match &self.store {
            Store::Sparse { data, indices, .. } => {
                DirectArray::probe(&self.path, indices, true).is_some() && DirectArray::probe(&self.path, data, false).is_some()
            }
            Store::Dense(_) => false,
        }
    }

    /// `indices[range]` and `data[range]` of a sparse matrix. When both are stored the way
    /// [`write_h5ad`] writes them (contiguous, unfiltered, little-endian 32-bit indices and
    /// float32 values) they are read straight from the file into their vectors, both at once
    /// on two threads, without HDF5 (whose global lock would serialise them). Otherwise
    /// (anndata writes chunked arrays, often compressed), or if the direct read does not
    /// check out, through HDF5.
    fn read_sparse_range(
        &self,
        data: &hdf5::Dataset,
        indices: &hdf5::Dataset,
        range: Range<usize>,
    ) -> Result<(Vec<u32>, Vec<f32>)> {
        let path = &self.info.path;
        let (fi, fd) = (format!("{path}/indices"), format!("{path}/data"));
        if range.len() >= DIRECT_MIN_VALUES {
            if let (Some(di), Some(dd)) =
                (DirectArray::probe(&self.path, indices, true), DirectArray::probe(&self.path, data, false))
            {
                let (idx, vals) = std::thread::scope(|s| {
                    let h = s.spawn(|| di.read_u32(range.clone(), &fi));
                    let vals = dd.read_f32(range.clone()).map_err(|e| err!("{fd}: {e}"));
                    (h.join().unwrap_or_else(|_| Err(err!("{fi}: reader thread panicked"))), vals)
                });
                return Ok((idx?, vals?));
            }
        }
        Ok((read_index_range(indices, range.clone(), &fi)?, read_f32_range(data, range, &fd)?))
    }

    /// The CSC matrix converted to CSR, read once and kept for later row reads.
    fn csc_whole(&self) -> Result<&CsrMatrix> {
        if let Some(m) = self.csc_cache.get() {
            return Ok(m);
        }
        let m = self.read_csc()?;
        Ok(self.csc_cache.get_or_init(|| m))
    }

    /// Reads a CSC matrix and converts it to CSR.
    fn read_csc(&self) -> Result<CsrMatrix> {
        let Store::Sparse { data, indices, indptr } = &self.store else {
            bail!("{}: not a sparse matrix", self.info.path);
        };
        let info = &self.info;
        let nnz = *indptr.last().unwrap_or(&0) as usize;
        let (rows, vals) = self.read_sparse_range(data, indices, 0..nnz)?;
        Ok(CsrMatrix::from_csc(info.n_rows, info.n_cols, indptr, &rows, &vals, &info.path)?)
    }

    /// The rows `rows`, in that order (repeats allowed), e.g. a random sample of cells.
    /// Wanted rows are sorted and grouped into contiguous runs; each run is one read.
    pub fn read_row_indices(&self, rows: &[usize]) -> Result<CsrMatrix> {
        self.ctx(self.read_row_indices_inner(rows))
    }

    fn read_row_indices_inner(&self, rows: &[usize]) -> Result<CsrMatrix> {
        let info = &self.info;
        if let Some(&bad) = rows.iter().find(|&&r| r >= info.n_rows) {
            bail!("{}: row index {bad} is out of range (n_rows = {})", info.path, info.n_rows);
        }
        if info.format == MatrixFormat::Csc {
            return Ok(self.csc_whole()?.select_rows(rows));
        }
        let mut wanted = rows.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        // Runs [a, b) of rows to read, merged across small gaps.
        let mut runs: Vec<Range<usize>> = Vec::new();
        for &r in &wanted {
            if let Some(last) = runs.last_mut() {
                if r == last.end || self.gap_cost(last.end, r) <= MERGE_GAP_VALUES {
                    last.end = r + 1;
                    continue;
                }
            }
            runs.push(r..r + 1);
        }
        let parts: Vec<(usize, CsrMatrix)> =
            runs.into_iter().map(|run| Ok((run.start, self.read_rows_inner(run)?))).collect::<Result<_>>()?;
        // Assemble in the requested order.
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        indptr.push(0u64);
        for &r in rows {
            let k = parts.partition_point(|(start, _)| *start <= r) - 1;
            let (start, m) = &parts[k];
            let (i, v) = m.row(r - start);
            indices.extend_from_slice(i);
            data.extend_from_slice(v);
            indptr.push(indices.len() as u64);
        }
        Ok(CsrMatrix::new(rows.len(), info.n_cols, indptr, indices, data, &info.path)?)
    }

    /// Stored values between row `a` (inclusive) and row `b` (exclusive).
    fn gap_cost(&self, a: usize, b: usize) -> u64 {
        match &self.store {
            Store::Sparse { indptr, .. } => indptr[b] - indptr[a],
            Store::Dense(_) => ((b - a) * self.info.n_cols) as u64,
        }
    }

    /// A string entry of `uns` (as [`write_h5ad`] writes them), if present and a string.
    pub fn read_uns_string(&self, key: &str) -> Option<String> {
        let d = self.file.dataset(&format!("uns/{key}")).ok()?;
        d.read_scalar::<VarLenUnicode>().ok().map(|v| v.as_str().to_string())
    }

    /// The cell table (`obs`).
    pub fn read_obs(&self) -> Result<ObsTable> {
        self.ctx(read_frame(&self.file, "obs").map(|f| ObsTable { index: f.index, columns: f.columns }))
    }

    /// The gene names: the `var` index (for `raw`: the `raw/var` index), or the column named
    /// by [`ReadOptions::gene_symbols`].
    pub fn read_genes(&self) -> Result<Vec<String>> {
        self.ctx(self.read_genes_inner())
    }

    fn read_genes_inner(&self) -> Result<Vec<String>> {
        let var_path = match (&self.opts.matrix, self.info.path.as_str()) {
            (MatrixSource::Raw, "raw.X") => "raw.var",
            (MatrixSource::Raw, _) => "raw/var",
            _ => "var",
        };
        let frame = read_frame(&self.file, var_path)?;
        match &self.opts.gene_symbols {
            None => Ok(frame.index),
            Some(col) => {
                let c = frame.columns.iter().find(|(n, _)| n == col).map(|(_, c)| c).ok_or_else(|| {
                    err!(
                        "{var_path}/{col}: no such column for gene symbols; {var_path} has: {}",
                        describe(&frame.columns)
                    )
                })?;
                match c {
                    Column::Text(v) => Ok(v.clone()),
                    Column::Categorical { codes, categories, .. } => codes
                        .iter()
                        .enumerate()
                        .map(|(i, &k)| {
                            categories.get(k as usize).filter(|_| k >= 0).cloned().ok_or_else(|| {
                                err!("{var_path}/{col}: gene {i} ({}) has no symbol (code {k})", frame.index[i])
                            })
                        })
                        .collect(),
                    Column::Numeric(_) => bail!("{var_path}/{col}: is numeric; gene symbols must be strings"),
                }
            }
        }
    }

    /// Matrix, genes and obs as one checked [`Dataset`] named after the file stem.
    pub fn read_dataset(&self) -> Result<Dataset> {
        let x = self.read_matrix()?;
        let genes = self.read_genes()?;
        let obs = self.read_obs()?;
        let name = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        self.ctx(Dataset::new(name, x, genes, obs).map_err(Into::into))
    }

    /// Top-level names in the file (for messages and `inspect`).
    pub fn top_level(&self) -> Vec<String> {
        self.file.member_names().unwrap_or_default()
    }

    /// Names of the layers in the file.
    pub fn layer_names(&self) -> Vec<String> {
        self.file.group("layers").and_then(|g| g.member_names()).unwrap_or_default()
    }

    /// Whether the file holds a `raw` matrix.
    pub fn has_raw(&self) -> bool {
        exists(&self.file, "raw/X") || exists(&self.file, "raw.X")
    }
}

/// Reads the whole dataset selected by `opts`.
pub fn read_h5ad(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    H5adReader::open(path, opts)?.read_dataset()
}

/// Reads rows `rows` of the matrix selected by `opts` without loading the rest (CSR/dense).
pub fn read_rows(path: &Path, opts: &ReadOptions, rows: Range<usize>) -> Result<CsrMatrix> {
    H5adReader::open(path, opts)?.read_rows(rows)
}

// ------------------------------------------------------------------------------------------
// Opening and locating the matrix
// ------------------------------------------------------------------------------------------

/// Opens an HDF5 file read-only, telling a missing file, a non-HDF5 file and an unreadable
/// one apart. HDF5's advisory file lock is not taken: scdd never modifies an input, and a lock
/// left by a writer's inherited descriptor would otherwise make the read fail.
fn open_file(path: &Path) -> Result<hdf5::File> {
    let p = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("{p}: no such file"),
        Err(e) => bail!("{p}: cannot read: {e}"),
        Ok(m) if m.is_dir() => bail!("{p}: is a directory, expected an .h5ad file"),
        Ok(_) => {}
    }
    if !has_hdf5_signature(path) {
        bail!("{p}: not an HDF5 file (no HDF5 signature); expected an AnnData .h5ad file");
    }
    hdf5::File::with_options()
        .with_fapl(|fapl| fapl.file_locking(false))
        .open(path)
        .map_err(|e| err!("{p}: cannot open as HDF5: {}", one_line(&e.to_string())))
}

/// HDF5 files start with an 8-byte signature at offset 0, 512, 1024, 2048, ...
fn has_hdf5_signature(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    const SIG: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
    let Ok(mut f) = std::fs::File::open(path) else { return false };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut off = 0u64;
    while off + 8 <= len {
        let mut buf = [0u8; 8];
        if f.seek(SeekFrom::Start(off)).is_err() || f.read_exact(&mut buf).is_err() {
            return false;
        }
        if &buf == SIG {
            return true;
        }
        off = if off == 0 { 512 } else { off * 2 };
    }
    false
}

/// Whether `path` (slash-separated) exists below `g`, checking each level.
fn exists(g: &hdf5::Group, path: &str) -> bool {
    let mut cur = String::new();
    for part in path.split('/') {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(part);
        if !g.link_exists(&cur) {
            return false;
        }
    }
    true
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".into()
    } else {
        names.join(", ")
    }
}

fn locate_matrix(file: &hdf5::File, src: &MatrixSource) -> Result<(MatrixInfo, Store)> {
    let path = match src {
        MatrixSource::X => {
            if !exists(file, "X") {
                bail!(
                    "not an AnnData file: no X matrix (top-level entries: {})",
                    list(&file.member_names().unwrap_or_default())
                );
            }
            "X".to_string()
        }
        MatrixSource::Layer(name) => {
            let layers = file.group("layers").and_then(|g| g.member_names()).unwrap_or_default();
            if name.contains('/') || !layers.contains(name) {
                bail!("layers/{name}: no such layer; layers: {}", list(&layers));
            }
            format!("layers/{name}")
        }
        MatrixSource::Raw => {
            if exists(file, "raw/X") {
                "raw/X".to_string()
            } else if exists(file, "raw.X") {
                "raw.X".to_string()
            } else {
                bail!(
                    "raw/X: the file has no raw matrix (top-level entries: {})",
                    list(&file.member_names().unwrap_or_default())
                );
            }
        }
    };
    let kind = h5(file.loc_type_by_name(&path), &path)?;
    match kind {
        LocationType::Dataset => {
            let ds = h5(file.dataset(&path), &path)?;
            let shape = ds.shape();
            if shape.len() != 2 {
                bail!("{path}: dense matrix has {} dimensions {:?}, expected 2", shape.len(), shape);
            }
            let dtype = numeric_dtype(&ds, &path)?;
            let info = MatrixInfo {
                path,
                n_rows: shape[0],
                n_cols: shape[1],
                format: MatrixFormat::Dense,
                stored: (shape[0] * shape[1]) as u64,
                dtype,
            };
            Ok((info, Store::Dense(ds)))
        }
        LocationType::Group => {
            let g = h5(file.group(&path), &path)?;
            let enc = attr_string(&g, "encoding-type", &path)?;
            let legacy = attr_string(&g, "h5sparse_format", &path)?;
            let (format, shape_attr) = match (enc.as_deref(), legacy.as_deref()) {
                (Some("csr_matrix"), _) => (MatrixFormat::Csr, "shape"),
                (Some("csc_matrix"), _) => (MatrixFormat::Csc, "shape"),
                (None, Some("csr")) => (MatrixFormat::Csr, "h5sparse_shape"),
                (None, Some("csc")) => (MatrixFormat::Csc, "h5sparse_shape"),
                (Some(e), _) => {
                    bail!("{path}: unsupported encoding-type {e:?}; expected csr_matrix, csc_matrix or a dense array")
                }
                (None, Some(e)) => bail!("{path}: unsupported h5sparse_format {e:?}; expected csr or csc"),
                (None, None) => {
                    bail!("{path}: group without encoding-type attribute; expected a csr_matrix or csc_matrix")
                }
            };
            let shape = attr_ints(&g, shape_attr, &path)?
                .ok_or_else(|| err!("{path}: sparse matrix has no {shape_attr} attribute"))?;
            if shape.len() != 2 || shape.iter().any(|&s| s < 0) {
                bail!("{path}: attribute {shape_attr} = {shape:?}, expected two non-negative integers");
            }
            let (n_rows, n_cols) = (shape[0] as usize, shape[1] as usize);
            let member = |name: &str| -> Result<hdf5::Dataset> {
                let field = format!("{path}/{name}");
                if !g.link_exists(name) {
                    bail!("{field}: missing from the {format} matrix");
                }
                let ds = h5(g.dataset(name), &field)?;
                if ds.ndim() != 1 {
                    bail!("{field}: has shape {:?}, expected one dimension", ds.shape());
                }
                Ok(ds)
            };
            let (data, indices, indptr_ds) = (member("data")?, member("indices")?, member("indptr")?);
            let dtype = numeric_dtype(&data, &format!("{path}/data"))?;
            integer_dtype(&indices, &format!("{path}/indices"))?;
            integer_dtype(&indptr_ds, &format!("{path}/indptr"))?;
            let (major, major_name) = if format == MatrixFormat::Csr { (n_rows, "n_rows") } else { (n_cols, "n_cols") };
            let raw_ptr = h5(indptr_ds.read_raw::<i64>(), &format!("{path}/indptr"))?;
            let indptr = check_indptr(&raw_ptr, major, major_name, data.size(), indices.size(), &path)?;
            let info = MatrixInfo { path, n_rows, n_cols, format, stored: data.size() as u64, dtype };
            Ok((info, Store::Sparse { data, indices, indptr }))
        }
        other => bail!("{path}: is a {other:?}, expected a matrix (dataset or sparse group)"),
    }
}

/// Validates a pointer array before any partial read relies on it.
fn check_indptr(
    p: &[i64],
    major: usize,
    major_name: &str,
    n_data: usize,
    n_indices: usize,
    path: &str,
) -> Result<Vec<u64>> {
    let field = format!("{path}/indptr");
    if p.len() != major + 1 {
        bail!("{field}: has {} entries, expected {major_name} + 1 = {}", p.len(), major + 1);
    }
    if n_data != n_indices {
        bail!("{path}/indices: has {n_indices} entries but {path}/data has {n_data}");
    }
    if p[0] != 0 {
        bail!("{field}: starts at {}, expected 0", p[0]);
    }
    if let Some(i) = p.windows(2).position(|w| w[1] < w[0]) {
        bail!("{field}: decreases at entry {i} ({} -> {})", p[i], p[i + 1]);
    }
    let last = p[major];
    if last as u64 != n_data as u64 {
        bail!("{field}: ends at {last}, but there are {n_data} stored values");
    }
    Ok(p.iter().map(|&v| v as u64).collect())
}

fn numeric_dtype(ds: &hdf5::Dataset, field: &str) -> Result<String> {
    let d = descriptor(ds, field)?;
    match d {
        TD::Integer(_) | TD::Unsigned(_) | TD::Float(_) | TD::Boolean => Ok(d.to_string()),
        other => bail!("{field}: has dtype {other}, expected numbers"),
    }
}

fn integer_dtype(ds: &hdf5::Dataset, field: &str) -> Result<()> {
    match descriptor(ds, field)? {
        TD::Integer(_) | TD::Unsigned(_) => Ok(()),
        other => bail!("{field}: has dtype {other}, expected integers"),
    }
}

/// Ranges shorter than this go through HDF5 (a thread and a file handle cost more).
const DIRECT_MIN_VALUES: usize = 1 << 20;

/// A 1-D dataset of 4-byte little-endian elements stored contiguously and unfiltered: its
/// elements can be read from the file with plain positioned reads.
struct DirectArray {
    file: std::fs::File,
    /// Byte offset of element 0 in the file.
    offset: u64,
    len: usize,
}

impl DirectArray {
    /// `Some` when `ds` holds 4-byte little-endian integers (`integer`) or float32 values,
    /// contiguously and without filters, and a probe read of its first and last elements
    /// through the file agrees with HDF5 (which also guards against address bases, e.g. a
    /// user block, that `H5Dget_offset` may not account for).
    #[cfg(all(unix, target_endian = "little"))]
    fn probe(path: &Path, ds: &hdf5::Dataset, integer: bool) -> Option<DirectArray> {
        use hdf5::datatype::ByteOrder;
        if ds.ndim() != 1 || ds.layout() != hdf5::dataset::Layout::Contiguous || !ds.filters().is_empty() {
            return None;
        }
        let dt = ds.dtype().ok()?;
        let kind_ok = match dt.to_descriptor().ok()? {
            TD::Integer(IntSize::U4) | TD::Unsigned(IntSize::U4) => integer,
            TD::Float(FloatSize::U4) => !integer,
            _ => false,
        };
        if !kind_ok || dt.byte_order() != ByteOrder::LittleEndian {
            return None;
        }
        let len = ds.size();
        let offset = ds.offset()?;
        if len == 0 || ds.storage_size() < len as u64 * 4 {
            return None;
        }
        let file = std::fs::File::open(path).ok()?;
        let d = DirectArray { file, offset, len };
        // the first and the last 16 elements, both ways, bit for bit
        for r in [0..len.min(16), len.saturating_sub(16)..len] {
            let direct = d.read_bytes(r.clone()).ok()?;
            let via_hdf5: Vec<u8> = if integer {
                ds.read_slice_1d::<u32, _>(r).ok()?.iter().flat_map(|v| v.to_le_bytes()).collect()
            } else {
                ds.read_slice_1d::<f32, _>(r).ok()?.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            if direct != via_hdf5 {
                return None;
            }
        }
        Some(d)
    }

    #[cfg(not(all(unix, target_endian = "little")))]
    fn probe(_path: &Path, _ds: &hdf5::Dataset, _integer: bool) -> Option<DirectArray> {
        None
    }

    fn read_bytes(&self, range: Range<usize>) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; range.len() * 4];
        self.read_into(range.start, &mut buf)?;
        Ok(buf)
    }

    #[cfg(unix)]
    fn read_into(&self, start: usize, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, self.offset + start as u64 * 4)
    }
    #[cfg(not(unix))]
    fn read_into(&self, _start: usize, _buf: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("direct reads need a unix platform"))
    }

    /// Elements `range` as `u32`, refusing values ≥ 2³¹ (negative as int32: anndata's
    /// indices are signed).
    fn read_u32(&self, range: Range<usize>, field: &str) -> Result<Vec<u32>> {
        let mut v = vec![0u32; range.len()];
        self.read_words(range.start, &mut v).map_err(|e| err!("{field}: {e}"))?;
        if let Some(k) = v.iter().position(|&i| i > i32::MAX as u32) {
            bail!("{field}: index {} at position {} is out of range", v[k] as i32, range.start + k);
        }
        Ok(v)
    }

    fn read_f32(&self, range: Range<usize>) -> std::io::Result<Vec<f32>> {
        let mut v = vec![0f32; range.len()];
        self.read_words(range.start, &mut v)?;
        Ok(v)
    }

    /// Reads `out.len()` 4-byte elements from element `start` on into `out`.
    fn read_words<T: Word>(&self, start: usize, out: &mut [T]) -> std::io::Result<()> {
        if start + out.len() > self.len {
            return Err(std::io::Error::other("read past the end of the dataset"));
        }
        // SAFETY: `T` is `u32` or `f32` (the private `Word` trait): 4 bytes, no padding, every
        // bit pattern valid, and `out` is initialised, so viewing it as bytes and writing any
        // bytes into it is sound. The file's little-endian bytes are the native
        // representation (`probe` checks the byte order and compares with HDF5).
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(out)) };
        self.read_into(start, bytes)
    }
}

/// 4-byte plain-data element types [`DirectArray`] reads into.
trait Word: Copy {}
impl Word for u32 {}
impl Word for f32 {}

/// Reads `data[range]` as `f32` (HDF5 converts integer and float64 values).
fn read_f32_range(ds: &hdf5::Dataset, range: Range<usize>, field: &str) -> Result<Vec<f32>> {
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let arr = h5(ds.read_slice_1d::<f32, _>(range), field)?;
    // A fresh 1-D read owns its buffer from offset 0: take it without copying.
    Ok(arr.into_raw_vec_and_offset().0)
}

/// Reads `indices[range]`, refusing negative or > u32 values. 32-bit indices (what anndata
/// writes) are read in their own type straight into the result (no conversion by HDF5, no
/// second buffer); wider ones in chunks through `i64`.
fn read_index_range(ds: &hdf5::Dataset, range: Range<usize>, field: &str) -> Result<Vec<u32>> {
    if range.is_empty() {
        return Ok(Vec::new());
    }
    match descriptor(ds, field)? {
        TD::Unsigned(IntSize::U4) => {
            return Ok(h5(ds.read_slice_1d::<u32, _>(range), field)?.into_raw_vec_and_offset().0);
        }
        TD::Integer(IntSize::U4) => {
            let v = h5(ds.read_slice_1d::<i32, _>(range.clone()), field)?.into_raw_vec_and_offset().0;
            if let Some(k) = v.iter().position(|&i| i < 0) {
                bail!("{field}: index {} at position {} is out of range", v[k], range.start + k);
            }
            // Same size and alignment: collected in place, without a second buffer.
            return Ok(v.into_iter().map(|i| i as u32).collect());
        }
        _ => {}
    }
    let mut out = Vec::with_capacity(range.len());
    let mut a = range.start;
    while a < range.end {
        let b = (a + INDEX_CHUNK).min(range.end);
        let arr = h5(ds.read_slice_1d::<i64, _>(a..b), field)?;
        for (k, &v) in arr.iter().enumerate() {
            let v =
                u32::try_from(v).map_err(|_| err!("{field}: index {v} at position {} is out of range", a + k))?;
            out.push(v);
        }
        a = b;
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Data frames (obs, var)
// ------------------------------------------------------------------------------------------

/// A data frame as read: index and the columns scdd understands (others are skipped).
struct Frame {
    index: Vec<String>,
    columns: Vec<(String, Column)>,
}

/// `name (kind)` for every column, for messages.
fn describe(columns: &[(String, Column)]) -> String {
    if columns.is_empty() {
        return "(no columns)".into();
    }
    columns.iter().map(|(n, c)| format!("{n} ({})", c.kind())).collect::<Vec<_>>().join(", ")
}

/// Column values as stored, before they become a [`Column`].
enum Values {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Str(v) => v.len(),
        }
    }
    /// As strings, the way pandas prints them (`1`, `1.5`, `2.0`, `True`).
    fn into_strings(self) -> Vec<String> {
        match self {
            Values::Str(v) => v,
            Values::Int(v) => v.iter().map(|x| x.to_string()).collect(),
            Values::Float(v) => v
                .iter()
                .map(|x| if x.is_finite() && x.fract() == 0.0 { format!("{x:.1}") } else { x.to_string() })
                .collect(),
            Values::Bool(v) => v.iter().map(|&b| if b { "True" } else { "False" }.to_string()).collect(),
        }
    }
    fn into_column(self) -> Column {
        match self {
            Values::Str(v) => Column::Text(v),
            Values::Int(v) => Column::Numeric(v.into_iter().map(|x| x as f64).collect()),
            Values::Float(v) => Column::Numeric(v),
            Values::Bool(v) => Column::Numeric(v.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect()),
        }
    }
    /// Integer category codes (`-1` = missing).
    fn into_codes(self, field: &str) -> Result<Vec<i32>> {
        match self {
            Values::Int(v) => v
                .into_iter()
                .enumerate()
                .map(|(i, c)| i32::try_from(c).map_err(|_| err!("{field}: code {c} at row {i} is out of range")))
                .collect(),
            _ => bail!("{field}: category codes must be integers"),
        }
    }
}

fn read_frame(file: &hdf5::File, path: &str) -> Result<Frame> {
    if !exists(file, path) {
        bail!("{path}: missing (top-level entries: {})", list(&file.member_names().unwrap_or_default()));
    }
    match h5(file.loc_type_by_name(path), path)? {
        LocationType::Group => read_frame_group(&h5(file.group(path), path)?, path),
        LocationType::Dataset => read_frame_compound(file, &h5(file.dataset(path), path)?, path),
        other => bail!("{path}: is a {other:?}, expected a data frame"),
    }
}

/// anndata ≥ 0.7: a group with one member per column and an `_index` attribute.
fn read_frame_group(g: &hdf5::Group, path: &str) -> Result<Frame> {
    let members = h5(g.member_names(), path)?;
    let index_name = match attr_string(g, "_index", path)? {
        Some(n) => n,
        None if members.iter().any(|m| m == "_index") => "_index".into(),
        None if members.iter().any(|m| m == "index") => "index".into(),
        None => bail!("{path}: no _index attribute and no index dataset"),
    };
    if !members.contains(&index_name) {
        bail!("{path}: _index attribute names {index_name:?}, which is not in the group");
    }
    let index =
        read_values(&h5(g.dataset(&index_name), &format!("{path}/{index_name}"))?, &format!("{path}/{index_name}"))?
            .into_strings();
    let order = match attr_strings(g, "column-order", path)? {
        Some(o) => o,
        None => {
            let mut m: Vec<String> =
                members.iter().filter(|m| **m != index_name && *m != "__categories").cloned().collect();
            m.sort();
            m
        }
    };
    let legacy_cats =
        if members.iter().any(|m| m == "__categories") { Some(h5(g.group("__categories"), path)?) } else { None };
    let mut columns = Vec::new();
    for name in order {
        let field = format!("{path}/{name}");
        if !members.contains(&name) {
            bail!("{field}: listed in column-order but missing");
        }
        let col = match h5(g.loc_type_by_name(&name), &field)? {
            LocationType::Group => read_column_group(&h5(g.group(&name), &field)?, &field)?,
            LocationType::Dataset => {
                let ds = h5(g.dataset(&name), &field)?;
                if ds.ndim() != 1 {
                    None // e.g. a 2-D array column: not representable, skipped
                } else if let Some(cats) = legacy_cats.as_ref().filter(|c| c.link_exists(&name)) {
                    let cfield = format!("{path}/__categories/{name}");
                    let categories = read_values(&h5(cats.dataset(&name), &cfield)?, &cfield)?.into_strings();
                    let codes = read_values(&ds, &field)?.into_codes(&field)?;
                    Some(categorical(codes, categories, false, &field)?)
                } else {
                    read_values_opt(&ds, &field)?.map(Values::into_column)
                }
            }
            _ => None,
        };
        if let Some(col) = col {
            if col.len() != index.len() {
                bail!("{field}: has {} values, {path} has {} rows", col.len(), index.len());
            }
            columns.push((name, col));
        }
    }
    Ok(Frame { index, columns })
}

/// A column stored as a group: categorical or nullable. Unknown encodings give `None`.
fn read_column_group(g: &hdf5::Group, field: &str) -> Result<Option<Column>> {
    let enc = attr_string(g, "encoding-type", field)?.unwrap_or_default();
    let has = |n: &str| g.link_exists(n);
    if enc == "categorical" || (enc.is_empty() && has("codes") && has("categories")) {
        let cf = format!("{field}/codes");
        let codes = read_values(&h5(g.dataset("codes"), &cf)?, &cf)?.into_codes(&cf)?;
        let kf = format!("{field}/categories");
        let categories = read_values(&h5(g.dataset("categories"), &kf)?, &kf)?.into_strings();
        let ordered = attr_bool(g, "ordered", field)?.unwrap_or(false);
        return Ok(Some(categorical(codes, categories, ordered, field)?));
    }
    if enc.starts_with("nullable-") && has("values") && has("mask") {
        let vf = format!("{field}/values");
        let mf = format!("{field}/mask");
        let values = read_values(&h5(g.dataset("values"), &vf)?, &vf)?;
        let mask = match read_values(&h5(g.dataset("mask"), &mf)?, &mf)? {
            Values::Bool(m) => m,
            Values::Int(m) => m.into_iter().map(|x| x != 0).collect(),
            _ => bail!("{mf}: mask must be boolean"),
        };
        if mask.len() != values.len() {
            bail!("{mf}: has {} entries, {vf} has {}", mask.len(), values.len());
        }
        return Ok(Some(match values {
            Values::Str(v) => {
                Column::Text(v.into_iter().zip(&mask).map(|(s, &m)| if m { String::new() } else { s }).collect())
            }
            other => match other.into_column() {
                Column::Numeric(v) => {
                    Column::Numeric(v.into_iter().zip(&mask).map(|(x, &m)| if m { f64::NAN } else { x }).collect())
                }
                c => c,
            },
        }));
    }
    Ok(None)
}

/// Checks codes against categories and builds the column.
fn categorical(codes: Vec<i32>, categories: Vec<String>, ordered: bool, field: &str) -> Result<Column> {
    if let Some((row, &c)) = codes.iter().enumerate().find(|(_, &c)| c < -1 || c as i64 >= categories.len() as i64) {
        bail!("{field}: code {c} at row {row} is out of range ({} categories)", categories.len());
    }
    let mut seen = std::collections::HashSet::with_capacity(categories.len());
    if let Some(dup) = categories.iter().find(|c| !seen.insert(c.as_str())) {
        bail!("{field}: category {dup:?} appears twice; category names must be unique");
    }
    Ok(Column::Categorical { codes, categories, ordered })
}

/// anndata < 0.7: the frame is one compound dataset; field `index` is the index and
/// categorical fields hold codes into `uns/<field>_categories`.
fn read_frame_compound(file: &hdf5::File, ds: &hdf5::Dataset, path: &str) -> Result<Frame> {
    let TD::Compound(ct) = descriptor(ds, path)? else {
        bail!("{path}: is a dataset but not a compound (record) array; cannot read it as a data frame");
    };
    if ds.ndim() != 1 {
        bail!("{path}: record array has shape {:?}, expected one dimension", ds.shape());
    }
    let mut fields = ct.fields.clone();
    fields.sort_by_key(|f| f.index);
    let index_field = fields
        .iter()
        .find(|f| f.name == "index" || f.name == "_index")
        .ok_or_else(|| err!("{path}: record array has no index field"))?;
    let index = read_compound_field(ds, index_field, path)?
        .ok_or_else(|| err!("{path}: index field has unsupported type {}", index_field.ty))?
        .into_strings();
    let mut columns = Vec::new();
    for f in fields.iter().filter(|f| f.name != index_field.name) {
        let field = format!("{path}/{}", f.name);
        let Some(values) = read_compound_field(ds, f, path)? else { continue };
        let cats_path = format!("uns/{}_categories", f.name);
        let col = if matches!(values, Values::Int(_)) && exists(file, &cats_path) {
            let categories = read_values(&h5(file.dataset(&cats_path), &cats_path)?, &cats_path)?.into_strings();
            categorical(values.into_codes(&field)?, categories, false, &field)?
        } else {
            values.into_column()
        };
        columns.push((f.name.clone(), col));
    }
    Ok(Frame { index, columns })
}

// ------------------------------------------------------------------------------------------
// Low-level value reading
// ------------------------------------------------------------------------------------------

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Maps an HDF5 error to a one-line error naming `field`.
fn h5<T>(r: hdf5::Result<T>, field: &str) -> Result<T> {
    r.map_err(|e| {
        let msg = one_line(&e.to_string());
        if msg.contains("Invalid size of float datatype") {
            // HDF5 has no conversion for 2-byte floats here.
            err!("{field}: float16 values are not supported; store them as float32 (in Python: adata.X = adata.X.astype('float32'))")
        } else {
            err!("{field}: {msg}")
        }
    })
}

fn descriptor(c: &hdf5::Container, field: &str) -> Result<TD> {
    let dt = h5(c.dtype(), field)?;
    h5(dt.to_descriptor(), field)
}

/// Reads a 1-D (or scalar) dataset of numbers, booleans or strings.
fn read_values(ds: &hdf5::Dataset, field: &str) -> Result<Values> {
    read_values_opt(ds, field)?.ok_or_else(|| {
        let t = descriptor(ds, field).map(|d| d.to_string()).unwrap_or_else(|_| "unknown".into());
        err!("{field}: unsupported dtype {t}")
    })
}

/// Like [`read_values`], `None` for dtypes scdd does not read (compound, references, ...).
fn read_values_opt(ds: &hdf5::Dataset, field: &str) -> Result<Option<Values>> {
    Ok(Some(match descriptor(ds, field)? {
        TD::Integer(_) => Values::Int(h5(ds.read_raw::<i64>(), field)?),
        TD::Unsigned(_) => {
            let v = h5(ds.read_raw::<u64>(), field)?;
            Values::Int(
                v.into_iter()
                    .map(|x| i64::try_from(x).map_err(|_| err!("{field}: value {x} does not fit in int64")))
                    .collect::<Result<_>>()?,
            )
        }
        TD::Float(_) => Values::Float(h5(ds.read_raw::<f64>(), field)?),
        TD::Boolean => Values::Bool(h5(ds.read_raw::<bool>(), field)?),
        TD::VarLenUnicode | TD::VarLenAscii | TD::FixedAscii(_) | TD::FixedUnicode(_) => {
            Values::Str(read_strings(ds, false, field)?)
        }
        _ => return Ok(None),
    }))
}

/// Reads the strings of a dataset (`is_attr = false`) or attribute, whatever their kind.
fn read_strings(c: &hdf5::Container, is_attr: bool, field: &str) -> Result<Vec<String>> {
    match descriptor(c, field)? {
        TD::VarLenUnicode => {
            Ok(h5(c.read_raw::<VarLenUnicode>(), field)?.iter().map(|s| s.as_str().to_owned()).collect())
        }
        TD::VarLenAscii => Ok(h5(c.read_raw::<VarLenAscii>(), field)?.iter().map(|s| s.as_str().to_owned()).collect()),
        TD::FixedAscii(n) | TD::FixedUnicode(n) => {
            let dt = h5(c.dtype(), field)?;
            let pad = hdf5::sync::sync(|| unsafe { hdf5_sys::h5t::H5Tget_strpad(dt.id()) });
            let bytes = read_raw_bytes(c, is_attr, &dt, n, field)?;
            Ok(bytes
                .chunks(n.max(1))
                .map(|b| fixed_to_string(b, pad == hdf5_sys::h5t::H5T_str_t::H5T_STR_SPACEPAD))
                .collect())
        }
        other => bail!("{field}: has dtype {other}, expected strings"),
    }
}

/// One fixed-length string: up to the first NUL, trailing spaces dropped when space-padded.
fn fixed_to_string(b: &[u8], space_padded: bool) -> String {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]);
    if space_padded {
        s.trim_end_matches(' ').to_string()
    } else {
        s.into_owned()
    }
}

/// Reads every element of `c` converted to the memory type `mem` (`elem_size` bytes each)
/// into a byte buffer. Used for fixed-length strings and compound fields, which have no
/// fixed Rust type.
fn read_raw_bytes(
    c: &hdf5::Container,
    is_attr: bool,
    mem: &hdf5::Datatype,
    elem_size: usize,
    field: &str,
) -> Result<Vec<u8>> {
    let n = c.space().map(|s| s.size()).map_err(|e| err!("{field}: {}", one_line(&e.to_string())))?;
    let mut buf = vec![0u8; n * elem_size];
    if buf.is_empty() {
        return Ok(buf);
    }
    let (id, tid) = (c.id(), mem.id());
    // SAFETY: `buf` holds exactly `n` elements of `elem_size` bytes, the size of `mem`, and
    // the memory and file spaces are the whole (same-sized) selection.
    let rc = hdf5::sync::sync(|| unsafe {
        if is_attr {
            hdf5_sys::h5a::H5Aread(id, tid, buf.as_mut_ptr().cast())
        } else {
            hdf5_sys::h5d::H5Dread(
                id,
                tid,
                hdf5_sys::h5s::H5S_ALL,
                hdf5_sys::h5s::H5S_ALL,
                hdf5_sys::h5p::H5P_DEFAULT,
                buf.as_mut_ptr().cast(),
            )
        }
    });
    if rc < 0 {
        bail!("{field}: HDF5 could not read the values");
    }
    Ok(buf)
}

/// Reads one field of a compound dataset. `None` for field types scdd does not read.
fn read_compound_field(ds: &hdf5::Dataset, f: &CompoundField, path: &str) -> Result<Option<Values>> {
    let field = format!("{path}/{}", f.name);
    let target = match &f.ty {
        TD::Integer(_) | TD::Unsigned(_) => TD::Integer(IntSize::U8),
        TD::Float(_) => TD::Float(FloatSize::U8),
        TD::Boolean => TD::Boolean,
        TD::FixedAscii(n) => TD::FixedAscii(*n),
        TD::FixedUnicode(n) => TD::FixedUnicode(*n),
        _ => return Ok(None),
    };
    let size = target.size();
    let mem_desc = TD::Compound(CompoundType { fields: vec![CompoundField::new(&f.name, target.clone(), 0, 0)], size });
    let mem = h5(hdf5::Datatype::from_descriptor(&mem_desc), &field)?;
    let bytes = read_raw_bytes(ds, false, &mem, size, &field)?;
    let chunks = bytes.chunks_exact(size.max(1));
    Ok(Some(match target {
        TD::Integer(_) => Values::Int(chunks.map(|b| i64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).collect()),
        TD::Float(_) => Values::Float(chunks.map(|b| f64::from_ne_bytes(b.try_into().unwrap_or([0; 8]))).collect()),
        TD::Boolean => Values::Bool(chunks.map(|b| b[0] != 0).collect()),
        _ => Values::Str(chunks.map(|b| fixed_to_string(b, false)).collect()),
    }))
}

fn has_attr(loc: &Location, name: &str) -> bool {
    loc.attr_names().map(|n| n.iter().any(|a| a == name)).unwrap_or(false)
}

/// A string attribute (scalar or one-element array), if present.
fn attr_string(loc: &Location, name: &str, path: &str) -> Result<Option<String>> {
    Ok(attr_strings(loc, name, path)?.and_then(|v| v.into_iter().next()))
}

/// A string-array attribute, if present. An empty numeric array (how h5py stores an empty
/// list) reads as no strings.
fn attr_strings(loc: &Location, name: &str, path: &str) -> Result<Option<Vec<String>>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let field = format!("{path}@{name}");
    let a = h5(loc.attr(name), &field)?;
    match descriptor(&a, &field)? {
        TD::VarLenUnicode | TD::VarLenAscii | TD::FixedAscii(_) | TD::FixedUnicode(_) => {
            Ok(Some(read_strings(&a, true, &field)?))
        }
        _ if a.size() == 0 => Ok(Some(Vec::new())),
        other => bail!("{field}: has dtype {other}, expected strings"),
    }
}

fn attr_ints(loc: &Location, name: &str, path: &str) -> Result<Option<Vec<i64>>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let field = format!("{path}@{name}");
    let a = h5(loc.attr(name), &field)?;
    match descriptor(&a, &field)? {
        TD::Integer(_) | TD::Unsigned(_) => Ok(Some(h5(a.read_raw::<i64>(), &field)?)),
        other => bail!("{field}: has dtype {other}, expected integers"),
    }
}

fn attr_bool(loc: &Location, name: &str, path: &str) -> Result<Option<bool>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let field = format!("{path}@{name}");
    let a = h5(loc.attr(name), &field)?;
    Ok(match descriptor(&a, &field)? {
        TD::Boolean => h5(a.read_raw::<bool>(), &field)?.first().copied(),
        TD::Integer(_) | TD::Unsigned(_) => h5(a.read_raw::<i64>(), &field)?.first().map(|&v| v != 0),
        _ => None,
    })
}

// ------------------------------------------------------------------------------------------
// Writing
// ------------------------------------------------------------------------------------------

/// Writes `ds` as an AnnData file: CSR `X` (float32 data; indices and indptr both int32, or
/// both int64 when the matrix is too large for int32, as anndata does), `obs` (index + categorical / numeric / text columns), `var` (gene names as index),
/// `uns` (string entries), and empty `layers obsm obsp varm varp`. Every element carries its
/// anndata `encoding-type` / `encoding-version`. The file is written to a temporary sibling
/// and renamed, so an error never leaves a partial file at `path`.
pub fn write_h5ad(path: &Path, ds: &Dataset, uns: &BTreeMap<String, String>) -> Result<()> {
    crate::io::fs::with_atomic(path, |tmp| {
        write_file(tmp, ds, uns).with_context(|| format!("{}: writing", path.display()))?;
        // Make the data durable before the rename makes it visible.
        std::fs::File::open(tmp).and_then(|f| f.sync_all()).with_context(|| format!("{}: syncing", tmp.display()))?;
        Ok(())
    })
}

fn write_file(tmp: &Path, ds: &Dataset, uns: &BTreeMap<String, String>) -> Result<()> {
    // All handles are dropped at the end of this function, which closes the file.
    // No HDF5 file lock: the file is private until renamed, and a lock would leak into child
    // processes spawned meanwhile (HDF5 does not open with O_CLOEXEC) and block later readers.
    let f = h5(
        hdf5::File::with_options().with_fapl(|fapl| fapl.file_locking(false)).create(tmp),
        &tmp.display().to_string(),
    )?;
    stamp(&f, "anndata", "0.1.0", "/")?;
    write_csr(&f, "X", &ds.x)?;
    write_frame(&f, "obs", &ds.obs.index, &ds.obs.columns)?;
    write_frame(&f, "var", &ds.genes, &[])?;
    let u = new_group(&f, "uns", "dict", "0.1.0")?;
    for (k, v) in uns {
        check_name(k, "uns")?;
        let field = format!("uns/{k}");
        let d = h5(u.new_dataset::<VarLenUnicode>().create(k.as_str()), &field)?;
        h5(d.write_scalar(&vlu(v, &field)?), &field)?;
        stamp(&d, "string", "0.2.0", &field)?;
    }
    for g in ["layers", "obsm", "obsp", "varm", "varp"] {
        new_group(&f, g, "dict", "0.1.0")?;
    }
    h5(f.flush(), "flush")?;
    Ok(())
}

fn vlu(s: &str, field: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>().map_err(|_| err!("{field}: value {s:?} contains a NUL character"))
}

/// Refuses names HDF5 would treat as paths.
fn check_name(name: &str, parent: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." {
        bail!("{parent}: name {name:?} cannot be stored in HDF5 (empty, '.' or containing '/')");
    }
    Ok(())
}

/// Sets the `encoding-type` and `encoding-version` attributes.
fn stamp(loc: &Location, enc: &str, version: &str, field: &str) -> Result<()> {
    set_attr_str(loc, "encoding-type", enc, field)?;
    set_attr_str(loc, "encoding-version", version, field)
}

fn set_attr_str(loc: &Location, name: &str, value: &str, field: &str) -> Result<()> {
    let f = format!("{field}@{name}");
    let a = h5(loc.new_attr::<VarLenUnicode>().create(name), &f)?;
    h5(a.write_scalar(&vlu(value, &f)?), &f)
}

fn new_group(parent: &hdf5::Group, name: &str, enc: &str, version: &str) -> Result<hdf5::Group> {
    let g = h5(parent.create_group(name), name)?;
    stamp(&g, enc, version, name)?;
    Ok(g)
}

fn write_array<T: hdf5::H5Type>(
    g: &hdf5::Group,
    name: &str,
    values: &[T],
    field: &str,
    stamp_array: bool,
) -> Result<()> {
    let d = h5(g.new_dataset_builder().with_data(values).create(name), field)?;
    if stamp_array {
        stamp(&d, "array", "0.2.0", field)?;
    }
    Ok(())
}

fn write_strings(g: &hdf5::Group, name: &str, values: &[String], field: &str) -> Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s, field)).collect::<Result<_>>()?;
    let d = h5(g.new_dataset_builder().with_data(&v[..]).create(name), field)?;
    stamp(&d, "string-array", "0.2.0", field)
}

fn write_csr(f: &hdf5::File, name: &str, x: &CsrMatrix) -> Result<()> {
    let g = new_group(f, name, "csr_matrix", "0.1.0")?;
    let shape = [x.n_rows() as i64, x.n_cols() as i64];
    let field = format!("{name}@shape");
    h5(g.new_attr_builder().with_data(&shape[..]).create("shape"), &field)?;
    write_array(&g, "data", x.data(), &format!("{name}/data"), false)?;
    // One index dtype for both arrays, as scipy keeps them (mixed dtypes break scipy routines
    // such as eliminate_zeros on the matrix anndata builds): int32 when everything fits.
    let fits_i32 = x.n_cols() <= i32::MAX as usize && x.nnz() <= i32::MAX as usize;
    let (fi, fp) = (format!("{name}/indices"), format!("{name}/indptr"));
    if fits_i32 {
        let idx: Vec<i32> = x.indices().iter().map(|&c| c as i32).collect();
        write_array(&g, "indices", &idx, &fi, false)?;
        let ptr: Vec<i32> = x.indptr().iter().map(|&p| p as i32).collect();
        write_array(&g, "indptr", &ptr, &fp, false)
    } else {
        let idx: Vec<i64> = x.indices().iter().map(|&c| c as i64).collect();
        write_array(&g, "indices", &idx, &fi, false)?;
        let ptr: Vec<i64> = x.indptr().iter().map(|&p| p as i64).collect();
        write_array(&g, "indptr", &ptr, &fp, false)
    }
}

/// A data frame group as anndata ≥ 0.8 writes it.
fn write_frame(f: &hdf5::File, name: &str, index: &[String], columns: &[(String, Column)]) -> Result<()> {
    let g = new_group(f, name, "dataframe", "0.2.0")?;
    set_attr_str(&g, "_index", "_index", name)?;
    let order_field = format!("{name}@column-order");
    if columns.is_empty() {
        // h5py stores an empty list as an empty float64 array; anndata writes the same.
        h5(g.new_attr_builder().with_data(&[0f64; 0][..]).create("column-order"), &order_field)?;
    } else {
        let names: Vec<VarLenUnicode> = columns.iter().map(|(n, _)| vlu(n, &order_field)).collect::<Result<_>>()?;
        h5(g.new_attr_builder().with_data(&names[..]).create("column-order"), &order_field)?;
    }
    write_strings(&g, "_index", index, &format!("{name}/_index"))?;
    for (col, c) in columns {
        check_name(col, name)?;
        if col == "_index" {
            bail!("{name}/_index: a column cannot be named _index");
        }
        let field = format!("{name}/{col}");
        if c.len() != index.len() {
            bail!("{field}: has {} values, {name} has {} rows", c.len(), index.len());
        }
        match c {
            Column::Numeric(v) => write_array(&g, col, v, &field, true)?,
            Column::Text(v) => write_strings(&g, col, v, &field)?,
            Column::Categorical { codes, categories, ordered } => {
                if let Some(d) = scdd_core::dataset::first_duplicate(categories) {
                    bail!("{field}: duplicate category {d:?}");
                }
                if let Some(&c) = codes.iter().find(|&&c| c < -1 || c as i64 >= categories.len() as i64) {
                    bail!("{field}: code {c} is out of range ({} categories)", categories.len());
                }
                let cg = h5(g.create_group(col), &field)?;
                stamp(&cg, "categorical", "0.2.0", &field)?;
                let of = format!("{field}@ordered");
                h5(cg.new_attr::<bool>().create("ordered").and_then(|a| a.write_scalar(ordered)), &of)?;
                let cf = format!("{field}/codes");
                // The narrowest signed type, as pandas does.
                if categories.len() < i8::MAX as usize {
                    let v: Vec<i8> = codes.iter().map(|&c| c as i8).collect();
                    write_array(&cg, "codes", &v, &cf, true)?;
                } else if categories.len() < i16::MAX as usize {
                    let v: Vec<i16> = codes.iter().map(|&c| c as i16).collect();
                    write_array(&cg, "codes", &v, &cf, true)?;
                } else {
                    write_array(&cg, "codes", codes, &cf, true)?;
                }
                write_strings(&cg, "categories", categories, &format!("{field}/categories"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        let x = CsrMatrix::new(3, 4, vec![0, 2, 2, 5], vec![0, 3, 0, 1, 2], vec![1., 2., 3., 4., 5.], "t").unwrap();
        let mut obs = ObsTable { index: vec!["c0".into(), "c1".into(), "c2".into()], columns: vec![] };
        obs.set("ct", Column::categorical_from_labels(&["b", "a", "b"])).unwrap();
        obs.set("n", Column::Numeric(vec![1.0, f64::NAN, 3.5])).unwrap();
        obs.set("s", Column::Text(vec!["x".into(), "ü".into(), "".into()])).unwrap();
        let genes = vec!["g0".into(), "g1".into(), "g2".into(), "g3".into()];
        Dataset::new("toy", x, genes, obs).unwrap()
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("toy.h5ad");
        let ds = toy();
        let mut uns = BTreeMap::new();
        uns.insert("scdd_version".to_string(), "0.1.0".to_string());
        write_h5ad(&p, &ds, &uns).unwrap();
        let back = read_h5ad(&p, &ReadOptions::default()).unwrap();
        assert_eq!(back.x, ds.x);
        assert_eq!(back.genes, ds.genes);
        assert_eq!(back.obs.index, ds.obs.index);
        assert_eq!(back.obs.get("ct"), ds.obs.get("ct"));
        assert_eq!(back.obs.get("s"), ds.obs.get("s"));
        match back.obs.get("n") {
            Some(Column::Numeric(v)) => assert!(v[0] == 1.0 && v[1].is_nan() && v[2] == 3.5),
            other => panic!("{other:?}"),
        }
        // partial reads
        let r = H5adReader::open(&p, &ReadOptions::default()).unwrap();
        assert_eq!(r.read_rows(1..3).unwrap(), ds.x.select_rows(&[1, 2]));
        assert_eq!(r.read_row_indices(&[2, 0, 2]).unwrap(), ds.x.select_rows(&[2, 0, 2]));
        assert_eq!(r.read_rows(0..0).unwrap().n_rows(), 0);
        assert!(format!("{:#}", r.read_rows(2..4).unwrap_err()).contains("out of bounds"));
        // no temp file left behind
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn errors_name_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.h5ad");
        let e = format!("{:#}", read_h5ad(&missing, &ReadOptions::default()).unwrap_err());
        assert!(e.contains("nope.h5ad: no such file"), "{e}");
        let txt = dir.path().join("t.h5ad");
        std::fs::write(&txt, "hello").unwrap();
        let e = format!("{:#}", read_h5ad(&txt, &ReadOptions::default()).unwrap_err());
        assert!(e.contains("not an HDF5 file"), "{e}");
        let p = dir.path().join("toy.h5ad");
        write_h5ad(&p, &toy(), &BTreeMap::new()).unwrap();
        let e = format!("{:#}", read_h5ad(&p, &ReadOptions::matrix(MatrixSource::Layer("counts".into()))).unwrap_err());
        assert!(e.contains("layers/counts: no such layer"), "{e}");
        let e = format!("{:#}", read_h5ad(&p, &ReadOptions::matrix(MatrixSource::Raw)).unwrap_err());
        assert!(e.contains("no raw matrix"), "{e}");
        let opts = ReadOptions { gene_symbols: Some("sym".into()), ..Default::default() };
        let e = format!("{:#}", read_h5ad(&p, &opts).unwrap_err());
        assert!(e.contains("var/sym: no such column"), "{e}");
    }
}

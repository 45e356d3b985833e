//! Reads `torch.save` checkpoints (state dicts) in pure Rust: no Python, no libtorch.
//!
//! Two on-disk formats are understood:
//!
//! * **zip** (PyTorch ≥ 1.6, the default): a zip archive with records `<name>/data.pkl` (the
//!   pickled object), `<name>/data/<key>` (one raw little-endian storage per key) and optionally
//!   `<name>/byteorder` (`little` or `big`).
//! * **legacy** (`_use_new_zipfile_serialization=False`, PyTorch < 1.6): five pickles in a row
//!   (magic number, protocol version, sys info, the object, the sorted storage keys), then for
//!   each key an `i64` element count and the raw storage bytes.
//!
//! The pickle interpreter ([`Unpickler`]) implements the opcodes of protocols 0–5 that plain
//! data and state dicts use. Tensors arrive as `torch._utils._rebuild_tensor_v2(storage, offset,
//! size, stride, …)` over persistent storages `("storage", torch.FloatStorage, key, location,
//! numel)`; they become [`TensorRef`]s whose values [`TorchSave::read_f32`] gathers (any
//! strides, any floating or integer dtype, converted to `f32`). Nothing a pickle names is ever
//! executed: unknown callables become inert [`Value::Object`]s.
use crate::error::{err, bail, Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Element type of a storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// From a legacy typed-storage class name (`FloatStorage`, ...).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" | "UntypedStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// From a `torch.<dtype>` attribute name (`float32`, `half`, ...).
    pub fn from_torch_dtype(name: &str) -> Option<DType> {
        Some(match name {
            "float64" | "double" => DType::F64,
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

/// A persistent storage reference from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageRef {
    pub key: String,
    /// The storage class as pickled (`FloatStorage`, ...).
    pub class: String,
    /// `None` for a storage class this reader does not know.
    pub dtype: Option<DType>,
    /// Number of elements of `dtype`.
    pub numel: usize,
}

/// A tensor: a strided view into a storage (offsets and strides in elements).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A value of the pickle machine. Lists and dicts are shared (`Rc`) so that memoised references
/// see later mutations, as in Python.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    /// Insertion-ordered (`dict` and `collections.OrderedDict`).
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A module-level name (`GLOBAL`): a class or function, never resolved or called.
    Global { module: String, name: String },
    Storage(StorageRef),
    Tensor(TensorRef),
    /// Any other reconstructed object: what the pickle asked to call, with its arguments.
    Object { callable: Box<Value>, args: Box<Value> },
}

impl Value {
    fn new_dict(items: Vec<(Value, Value)>) -> Value {
        Value::Dict(Rc::new(RefCell::new(items)))
    }
    fn new_list(items: Vec<Value>) -> Value {
        Value::List(Rc::new(RefCell::new(items)))
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i128),
            _ => None,
        }
    }
    /// The value stored under string key `key` of a dict (the last one, as Python would keep).
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d.borrow().iter().rev().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone()),
            _ => None,
        }
    }
    /// A short description for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global { module, name } => format!("{module}.{name}"),
            Value::Storage(_) => "storage".into(),
            Value::Tensor(_) => "tensor".into(),
            Value::Object { callable, .. } => format!("{} object", callable.kind()),
        }
    }
}

fn as_usize(v: &Value, what: &str) -> Result<usize> {
    v.as_int()
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| err!("{what} must be a non-negative int, found {}", v.kind()))
}

fn as_usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(items) => items.iter().map(|x| as_usize(x, what)).collect(),
        Value::List(items) => items.borrow().iter().map(|x| as_usize(x, what)).collect(),
        _ => bail!("{what} must be a tuple of ints, found {}", v.kind()),
    }
}

// ------------------------------------------------------------------------------------------------
// The pickle machine
// ------------------------------------------------------------------------------------------------

/// Interprets one pickle; `pos` is left just after its `STOP` opcode.
pub struct Unpickler<'a> {
    data: &'a [u8],
    pub pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl<'a> Unpickler<'a> {
    pub fn new(data: &'a [u8], pos: usize) -> Self {
        Unpickler { data, pos, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => bail!("pickle ends early: {n} bytes needed at byte {}, {} left", self.pos, self.data.len() - self.pos),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| err!("length {n} too large"))
    }
    /// A text line (protocol 0 arguments), without its newline.
    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| err!("unterminated text argument at byte {}", self.pos))?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| err!("text argument is not UTF-8"))
    }
    fn utf8(&mut self, n: usize) -> Result<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(std::str::from_utf8(b).map_err(|_| err!("string is not UTF-8"))?.to_string()))
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            bail!("pickle stack underflow at byte {}", self.pos);
        }
        Ok(self.stack.pop().unwrap())
    }
    fn top(&mut self) -> Result<&mut Value> {
        let at = self.pos;
        self.stack.last_mut().ok_or_else(|| err!("pickle stack empty at byte {at}"))
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| err!("pickle MARK missing at byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&self, i: u64) -> Result<Value> {
        self.memo.get(&i).cloned().ok_or_else(|| err!("pickle memo entry {i} missing at byte {}", self.pos))
    }
    fn memo_put(&mut self, i: u64) -> Result<()> {
        let v = self.stack.last().cloned().ok_or_else(|| err!("pickle PUT on an empty stack"))?;
        self.memo.insert(i, v);
        Ok(())
    }

    /// Runs to `STOP` and returns the pickled object.
    pub fn load(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        bail!("pickle protocol {proto} is not supported (0–5 are)");
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint only
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                // --- scalars
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.stack.push(Value::Int(v as i128));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i128));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i128));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    self.stack.push(Value::Int(long_from_le(b)?));
                }
                b'I' => {
                    let s = self.line()?;
                    self.stack.push(match s {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(s.trim().parse().map_err(|_| err!("bad INT {s:?}"))?),
                    });
                }
                b'L' => {
                    let s = self.line()?;
                    let v = s.trim().trim_end_matches('L').parse().map_err(|_| err!("bad LONG {s:?}"))?;
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let s = self.line()?;
                    self.stack.push(Value::Float(s.trim().parse().map_err(|_| err!("bad FLOAT {s:?}"))?));
                }
                // --- strings and bytes
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.utf8(n)?;
                    self.stack.push(v);
                }
                b'V' => {
                    let s = self.line()?.to_string();
                    self.stack.push(Value::Str(s));
                }
                // Python 2 `str`: bytes, which torch's own files only use for ASCII text.
                b'T' | b'U' => {
                    let n = if op == b'T' { self.u32()? as usize } else { self.u8()? as usize };
                    let b = self.take(n)?;
                    self.stack.push(Value::Str(b.iter().map(|&c| c as char).collect()));
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => self.u8()? as usize,
                        _ => self.len_u64()?,
                    };
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b));
                }
                // --- containers
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(items));
                }
                b']' => self.stack.push(Value::new_list(Vec::new())),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::new_list(items));
                }
                b'a' => {
                    let v = self.pop()?;
                    if let Value::List(l) = self.top()? {
                        l.borrow_mut().push(v);
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.borrow_mut().extend(items);
                    }
                }
                b'}' => self.stack.push(Value::new_dict(Vec::new())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.stack.push(Value::new_dict(pairs));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    if let Value::Dict(d) = self.top()? {
                        d.borrow_mut().push((k, v));
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    if let Value::Dict(d) = self.top()? {
                        d.borrow_mut().extend(pairs);
                    }
                }
                0x8f => self.stack.push(Value::new_list(Vec::new())), // EMPTY_SET, kept as a list
                0x90 => {
                    let items = self.pop_mark()?;
                    if let Value::List(l) = self.top()? {
                        l.borrow_mut().extend(items);
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::new_list(items));
                }
                // --- memo
                b'p' => {
                    let i = self.line()?.trim().parse().map_err(|_| err!("bad PUT index"))?;
                    self.memo_put(i)?;
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'g' => {
                    let i = self.line()?.trim().parse().map_err(|_| err!("bad GET index"))?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                // --- objects
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.stack.push(Value::Global { module, name });
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => self.stack.push(Value::Global { module, name }),
                        _ => bail!("STACK_GLOBAL needs two strings at byte {at}"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args).with_context(|| format!("pickle REDUCE at byte {at}"))?;
                    self.stack.push(v);
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Object { callable: Box::new(cls), args: Box::new(args) });
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    self.stack.push(Value::Object { callable: Box::new(cls), args: Box::new(args) });
                }
                b'b' => {
                    // BUILD: sets an object's state (e.g. a state dict's `_metadata`); not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid).with_context(|| format!("pickle persistent id at byte {at}"))?;
                    self.stack.push(v);
                }
                b'P' => {
                    let s = self.line()?.to_string();
                    bail!("text persistent id {s:?} at byte {at} is not a torch storage");
                }
                _ => bail!("unsupported pickle opcode 0x{op:02x} at byte {at}"),
            }
        }
    }
}

fn long_from_le(b: &[u8]) -> Result<i128> {
    if b.is_empty() {
        return Ok(0);
    }
    if b.len() > 16 {
        bail!("integer of {} bytes is too large", b.len());
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = [if neg { 0xff } else { 0 }; 16];
    buf[..b.len()].copy_from_slice(b);
    Ok(i128::from_le_bytes(buf))
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if items.len() % 2 == 1 {
        bail!("odd number of items for a dict");
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// `("storage", torch.<X>Storage, key, location, numel[, view_metadata])`.
fn persistent_load(pid: Value) -> Result<Value> {
    let Value::Tuple(items) = pid else { bail!("persistent id is a {}, expected a tuple", pid.kind()) };
    if items.len() < 5 || items[0].as_str() != Some("storage") {
        bail!("persistent id is not a torch storage reference ({} items)", items.len());
    }
    let class = match &items[1] {
        Value::Global { name, .. } => name.clone(),
        other => bail!("storage type is a {}, expected a torch storage class", other.kind()),
    };
    let key = match &items[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => bail!("storage key is a {}", other.kind()),
    };
    if let Some(view) = items.get(5) {
        if !matches!(view, Value::None) {
            bail!("storage {key} is a view into another storage (legacy format); re-save the checkpoint with a current PyTorch");
        }
    }
    let numel = as_usize(&items[4], "storage size")?;
    let dtype = DType::from_storage_class(&class);
    Ok(Value::Storage(StorageRef { key, class, dtype, numel }))
}

/// The callables a state dict needs; anything else stays an inert object.
fn reduce(callable: Value, args: Value) -> Result<Value> {
    let (module, name) = match &callable {
        Value::Global { module, name } => (module.as_str(), name.as_str()),
        _ => return Ok(Value::Object { callable: Box::new(callable), args: Box::new(args) }),
    };
    let argv = match &args {
        Value::Tuple(a) => a.clone(),
        _ => Vec::new(),
    };
    match (module, name) {
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => {
            let mut items = Vec::new();
            if let Some(Value::List(l)) = argv.first() {
                for item in l.borrow().iter() {
                    if let Value::Tuple(kv) = item {
                        if kv.len() == 2 {
                            items.push((kv[0].clone(), kv[1].clone()));
                        }
                    }
                }
            }
            Ok(Value::new_dict(items))
        }
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            if argv.len() < 4 {
                bail!("{name} with {} arguments", argv.len());
            }
            let Value::Storage(mut storage) = argv[0].clone() else {
                bail!("{name}: first argument is a {}, expected a storage", argv[0].kind())
            };
            if name == "_rebuild_tensor_v3" {
                // (storage: UntypedStorage (bytes), offset, size, stride, requires_grad, hooks, dtype, ...)
                if let Some(Value::Global { name: dt, .. }) = argv.get(6) {
                    let dtype = DType::from_torch_dtype(dt);
                    if let Some(d) = dtype {
                        storage.numel /= d.size();
                    }
                    storage.class = format!("torch.{dt}");
                    storage.dtype = dtype;
                }
            }
            let offset = as_usize(&argv[1], "storage offset")?;
            let shape = as_usize_tuple(&argv[2], "tensor size")?;
            let stride = as_usize_tuple(&argv[3], "tensor stride")?;
            if shape.len() != stride.len() {
                bail!("tensor size {shape:?} and stride {stride:?} differ in rank");
            }
            Ok(Value::Tensor(TensorRef { storage, offset, shape, stride }))
        }
        // nn.Parameter(data, requires_grad, hooks[, state]) -> the data tensor; torch.Size(tuple).
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") | ("torch", "Size") => {
            argv.into_iter().next().ok_or_else(|| err!("{module}.{name} without arguments"))
        }
        _ => Ok(Value::Object { callable: Box::new(callable), args: Box::new(args) }),
    }
}

// ------------------------------------------------------------------------------------------------
// torch.save files
// ------------------------------------------------------------------------------------------------

/// Legacy-format magic number (the first pickle of such a file).
const LEGACY_MAGIC: i128 = 0x1950a86a20f9469cfc6c;

enum Storages {
    Zip { archive: RefCell<zip::ZipArchive<std::fs::File>>, prefix: String, big_endian: bool },
    Legacy { data: HashMap<String, Vec<u8>> },
}

/// An opened `torch.save` file: the unpickled object and access to its storages.
pub struct TorchSave {
    pub path: PathBuf,
    pub root: Value,
    storages: Storages,
}

impl TorchSave {
    /// Opens a zip-format or legacy-format checkpoint. Errors name the file.
    pub fn open(path: &Path) -> Result<TorchSave> {
        let name = path.display().to_string();
        let mut f = std::fs::File::open(path).with_context(|| format!("{name}: cannot open"))?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).with_context(|| format!("{name}: cannot read"))?;
        if n == 4 && &magic == b"PK\x03\x04" {
            Self::open_zip(path).with_context(|| format!("{name}: not a readable torch.save checkpoint"))
        } else if n >= 2 && magic[0] == 0x80 {
            Self::open_legacy(path).with_context(|| format!("{name}: not a readable torch.save checkpoint"))
        } else {
            bail!("{name}: not a torch.save checkpoint (neither a zip archive nor a legacy pickle; first bytes {:02x?})", &magic[..n])
        }
    }

    fn open_zip(path: &Path) -> Result<TorchSave> {
        let file = std::fs::File::open(path)?;
        let mut archive = zip::ZipArchive::new(file).context("corrupted zip archive")?;
        let pkl = archive
            .file_names()
            .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1 || *n == "data.pkl")
            .min_by_key(|n| n.len())
            .map(str::to_string)
            .ok_or_else(|| err!("the zip archive has no data.pkl record"))?;
        let prefix = pkl.strip_suffix("data.pkl").unwrap().to_string();
        let bytes = read_entry(&mut archive, &pkl)?;
        let big_endian = match archive.by_name(&format!("{prefix}byteorder")) {
            Ok(mut e) => {
                let mut s = String::new();
                e.read_to_string(&mut s).context("reading the byteorder record")?;
                match s.trim() {
                    "little" => false,
                    "big" => true,
                    other => bail!("unknown byteorder {other:?}"),
                }
            }
            Err(_) => false,
        };
        let root = Unpickler::new(&bytes, 0).load().with_context(|| format!("unpickling {pkl}"))?;
        Ok(TorchSave { path: path.to_path_buf(), root, storages: Storages::Zip { archive: RefCell::new(archive), prefix, big_endian } })
    }

    fn open_legacy(path: &Path) -> Result<TorchSave> {
        let bytes = std::fs::read(path)?;
        let mut pos = 0;
        let mut next = |what: &str| -> Result<Value> {
            let mut u = Unpickler::new(&bytes, pos);
            let v = u.load().with_context(|| format!("unpickling the legacy {what}"))?;
            pos = u.pos;
            Ok(v)
        };
        let magic = next("magic number")?;
        if magic.as_int() != Some(LEGACY_MAGIC) {
            bail!("a pickle but not a torch.save file (magic number missing)");
        }
        let proto = next("protocol version")?;
        if proto.as_int() != Some(1001) {
            bail!("legacy protocol version {proto:?} is not supported (1001 is)");
        }
        let sys_info = next("sys info")?;
        if let Some(Value::Bool(false)) = sys_info.get("little_endian") {
            bail!("big-endian legacy checkpoints are not supported");
        }
        let root = next("object")?;
        let keys = next("storage keys")?;
        let keys: Vec<String> = match &keys {
            Value::List(l) => l
                .borrow()
                .iter()
                .map(|k| k.as_str().map(str::to_string).ok_or_else(|| err!("storage key is a {}", k.kind())))
                .collect::<Result<_>>()?,
            other => bail!("storage key list is a {}", other.kind()),
        };
        let mut sizes = HashMap::new();
        collect_storages(&root, &mut sizes);
        let mut data = HashMap::new();
        for key in keys {
            let dtype = sizes
                .get(&key)
                .and_then(|s: &StorageRef| s.dtype)
                .ok_or_else(|| err!("storage {key} is listed but of unknown type"))?;
            if pos + 8 > bytes.len() {
                bail!("file ends before storage {key}");
            }
            let numel = i64::from_le_bytes(bytes[pos..pos + 8].try_into().unwrap());
            pos += 8;
            let len = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(dtype.size()))
                .filter(|&l| pos + l <= bytes.len())
                .ok_or_else(|| err!("storage {key}: {numel} elements but the file ends early (truncated?)"))?;
            data.insert(key, bytes[pos..pos + len].to_vec());
            pos += len;
        }
        Ok(TorchSave { path: path.to_path_buf(), root, storages: Storages::Legacy { data } })
    }

    /// The state dict: the top-level `"state_dict"` entry (SCimilarity, Lightning), or the top
    /// level itself when it maps names to tensors. Keys in file order.
    pub fn state_dict(&self) -> Result<Vec<(String, TensorRef)>> {
        let name = self.path.display();
        let sd = match self.root.get("state_dict") {
            Some(v) => v,
            None => match &self.root {
                Value::Dict(d) if !d.borrow().is_empty() && d.borrow().iter().all(|(_, v)| matches!(v, Value::Tensor(_))) => {
                    self.root.clone()
                }
                Value::Dict(d) => {
                    let keys: Vec<String> = d.borrow().iter().take(8).map(|(k, _)| format!("{:?}", k.as_str().unwrap_or("?"))).collect();
                    bail!("{name}: no \"state_dict\" entry (top-level keys: {})", keys.join(", "))
                }
                other => bail!("{name}: holds a {}, expected a dict with a \"state_dict\" entry", other.kind()),
            },
        };
        let Value::Dict(d) = &sd else { bail!("{name}: \"state_dict\" is a {}, expected a dict", sd.kind()) };
        let mut out = Vec::new();
        for (k, v) in d.borrow().iter() {
            let key = k.as_str().ok_or_else(|| err!("{name}: state_dict has a {} key", k.kind()))?.to_string();
            match v {
                Value::Tensor(t) => out.push((key, t.clone())),
                other => bail!("{name}: state_dict entry `{key}` is a {}, expected a tensor", other.kind()),
            }
        }
        Ok(out)
    }

    /// A tensor's values as `f32`, row-major. Errors name the file and `key`.
    pub fn read_f32(&self, key: &str, t: &TensorRef) -> Result<Vec<f32>> {
        self.read_f32_inner(t).with_context(|| format!("{}: tensor `{key}`", self.path.display()))
    }

    fn read_f32_inner(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let s = &t.storage;
        let dtype = s.dtype.ok_or_else(|| err!("storage type {} is not supported", s.class))?;
        let (bytes, big_endian) = match &self.storages {
            Storages::Zip { archive, prefix, big_endian } => {
                let name = format!("{prefix}data/{}", s.key);
                (read_entry(&mut archive.borrow_mut(), &name)?, *big_endian)
            }
            Storages::Legacy { data } => {
                (data.get(&s.key).cloned().ok_or_else(|| err!("storage {} is missing from the file", s.key))?, false)
            }
        };
        let avail = bytes.len() / dtype.size();
        if avail < s.numel {
            bail!("storage {} holds {} elements of {:?}, the checkpoint declares {} (truncated?)", s.key, avail, dtype, s.numel);
        }
        let n = t.numel();
        if n == 0 {
            return Ok(Vec::new());
        }
        let last = t.shape.iter().zip(&t.stride).try_fold(t.offset, |acc, (&d, &st)| acc.checked_add((d - 1).checked_mul(st)?));
        match last {
            Some(l) if l < s.numel => {}
            _ => bail!(
                "shape {:?} with stride {:?} at offset {} reaches past its storage of {} elements",
                t.shape,
                t.stride,
                t.offset,
                s.numel
            ),
        }
        let elem = |i: usize| -> f32 { decode(dtype, big_endian, &bytes[i * dtype.size()..(i + 1) * dtype.size()]) };
        let mut out = Vec::with_capacity(n);
        // Row-major walk over the strided view.
        let rank = t.shape.len();
        let mut idx = vec![0usize; rank];
        let mut pos = t.offset;
        for _ in 0..n {
            out.push(elem(pos));
            for d in (0..rank).rev() {
                idx[d] += 1;
                pos += t.stride[d];
                if idx[d] < t.shape[d] {
                    break;
                }
                pos -= t.stride[d] * t.shape[d];
                idx[d] = 0;
            }
        }
        Ok(out)
    }
}

fn read_entry(archive: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<Vec<u8>> {
    let mut e = archive.by_name(name).map_err(|e| err!("zip record {name}: {e}"))?;
    let mut out = Vec::with_capacity(e.size().min(1 << 30) as usize);
    e.read_to_end(&mut out).with_context(|| format!("reading zip record {name} (corrupted archive?)"))?;
    Ok(out)
}

fn collect_storages(v: &Value, out: &mut HashMap<String, StorageRef>) {
    match v {
        Value::Storage(s) => {
            out.entry(s.key.clone()).or_insert_with(|| s.clone());
        }
        Value::Tensor(t) => {
            out.entry(t.storage.key.clone()).or_insert_with(|| t.storage.clone());
        }
        Value::Tuple(items) => items.iter().for_each(|x| collect_storages(x, out)),
        Value::List(items) => items.borrow().iter().for_each(|x| collect_storages(x, out)),
        Value::Dict(d) => d.borrow().iter().for_each(|(k, x)| {
            collect_storages(k, out);
            collect_storages(x, out)
        }),
        Value::Object { args, .. } => collect_storages(args, out),
        _ => {}
    }
}

fn decode(dtype: DType, big_endian: bool, b: &[u8]) -> f32 {
    macro_rules! num {
        ($t:ty) => {{
            let a = b.try_into().unwrap();
            if big_endian {
                <$t>::from_be_bytes(a)
            } else {
                <$t>::from_le_bytes(a)
            }
        }};
    }
    match dtype {
        DType::F64 => num!(f64) as f32,
        DType::F32 => num!(f32),
        DType::F16 => half::f16::from_bits(num!(u16)).to_f32(),
        DType::BF16 => half::bf16::from_bits(num!(u16)).to_f32(),
        DType::I64 => num!(i64) as f32,
        DType::I32 => num!(i32) as f32,
        DType::I16 => num!(i16) as f32,
        DType::I8 => b[0] as i8 as f32,
        DType::U8 => b[0] as f32,
        DType::Bool => (b[0] != 0) as u8 as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // pickle.dumps({"a": [1, -2, 3.5, None, True], "b": ("x", b"yz", 2**70)}, protocol=2)
    const P2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00N\x88eX\x01\x00\x00\x00bq\x03X\x01\x00\x00\x00xq\x04c_codecs\nencode\nq\x05X\x02\x00\x00\x00yzq\x06X\x06\x00\x00\x00latin1q\x07\x86q\x08Rq\t\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x87q\nu.";

    #[test]
    fn protocol2_plain_data() {
        let v = Unpickler::new(P2, 0).load().unwrap();
        let Value::List(a) = v.get("a").unwrap() else { panic!() };
        let a = a.borrow();
        assert_eq!(a[0].as_int(), Some(1));
        assert_eq!(a[1].as_int(), Some(-2));
        assert!(matches!(a[2], Value::Float(f) if f == 3.5));
        assert!(matches!(a[3], Value::None));
        assert!(matches!(a[4], Value::Bool(true)));
        let Value::Tuple(b) = v.get("b").unwrap() else { panic!() };
        assert_eq!(b[0].as_str(), Some("x"));
        assert!(matches!(&b[1], Value::Object { .. }), "unknown callables stay inert");
        assert_eq!(b[2].as_int(), Some(1i128 << 70));
    }

    // pickle.dumps({"k": [1, 2], "s": "é"}, protocol=4): FRAME, SHORT_BINUNICODE, MEMOIZE.
    const P4: &[u8] = b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01k\x94]\x94(K\x01K\x02e\x8c\x01s\x94\x8c\x02\xc3\xa9\x94u.";

    #[test]
    fn protocol4_framing_and_memoize() {
        let v = Unpickler::new(P4, 0).load().unwrap();
        assert_eq!(v.get("s").unwrap().as_str(), Some("é"));
        let Value::List(k) = v.get("k").unwrap() else { panic!() };
        assert_eq!(k.borrow().len(), 2);
    }

    #[test]
    fn memo_shares_mutated_containers() {
        // d = {}; pickle.dumps([d, d]) after d["x"] = 1 — both entries are the same dict.
        let p = b"\x80\x02]q\x00(}q\x01X\x01\x00\x00\x00xq\x02K\x01sh\x01e.";
        let v = Unpickler::new(p, 0).load().unwrap();
        let Value::List(l) = v else { panic!() };
        let l = l.borrow();
        assert_eq!(l[1].get("x").and_then(|v| v.as_int()), Some(1));
    }

    #[test]
    fn truncated_and_unknown_opcodes_fail_cleanly() {
        for cut in [1, 5, 20, P2.len() - 1] {
            assert!(Unpickler::new(&P2[..cut], 0).load().is_err(), "cut at {cut}");
        }
        let e = Unpickler::new(b"\x80\x02\xff.", 0).load().unwrap_err();
        assert!(e.to_string().contains("0xff"), "{e}");
        assert!(Unpickler::new(b"\x80\x02h\x05.", 0).load().is_err(), "memo miss");
        assert!(Unpickler::new(b"\x80\x02t.", 0).load().is_err(), "no mark");
    }

    #[test]
    fn rebuild_tensor_from_persistent_storage() {
        // What torch.save writes for {"w": torch.zeros(2, 3)} (protocol 2, zip format).
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01ctorch._utils\n_rebuild_tensor_v2\nq\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x06tq\x07QK\x00K\x02K\x03\x86q\x08K\x03K\x01\x86q\t\x89ccollections\nOrderedDict\nq\n)Rq\x0btq\x0cRq\rs.";
        let v = Unpickler::new(p, 0).load().unwrap();
        let Some(Value::Tensor(t)) = v.get("w") else { panic!("{v:?}") };
        assert_eq!(t.shape, vec![2, 3]);
        assert_eq!(t.stride, vec![3, 1]);
        assert_eq!(t.storage.dtype, Some(DType::F32));
        assert_eq!(t.storage.numel, 6);
        assert_eq!(t.storage.key, "0");
    }

    #[test]
    fn decode_dtypes() {
        assert_eq!(decode(DType::F32, false, &1.5f32.to_le_bytes()), 1.5);
        assert_eq!(decode(DType::F32, true, &1.5f32.to_be_bytes()), 1.5);
        assert_eq!(decode(DType::F64, false, &(-2.25f64).to_le_bytes()), -2.25);
        assert_eq!(decode(DType::F16, false, &half::f16::from_f32(0.5).to_bits().to_le_bytes()), 0.5);
        assert_eq!(decode(DType::BF16, false, &half::bf16::from_f32(3.0).to_bits().to_le_bytes()), 3.0);
        assert_eq!(decode(DType::I64, false, &(-7i64).to_le_bytes()), -7.0);
    }
}

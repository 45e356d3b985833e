//! Named tensors as stored in generator bundles: shape, dtype and little-endian bytes.
use crate::error::{CoreError, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Little-endian element bytes, row-major.
    #[serde(with = "bytes_as_seq")]
    pub data: Vec<u8>,
}

mod bytes_as_seq {
    // Serialize raw bytes as a byte string (one length prefix, no per-element overhead).
    use serde::{Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Tensor {
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        check_len(&shape, values.len())?;
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Tensor { shape, dtype: DType::F32, data })
    }

    /// Stores values as IEEE half precision (halves the size; ~3 significant digits).
    pub fn from_f32_as_f16(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        check_len(&shape, values.len())?;
        let mut data = Vec::with_capacity(values.len() * 2);
        for v in values {
            data.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
        }
        Ok(Tensor { shape, dtype: DType::F16, data })
    }

    /// Number of elements (saturates at `usize::MAX` for shapes too large to exist, which
    /// only a corrupted or crafted file can hold).
    pub fn numel(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// Bytes per element.
    pub fn elem_size(&self) -> usize {
        match self.dtype {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }

    /// Checks that the byte length fits shape and dtype.
    pub fn validate(&self) -> Result<()> {
        let want = checked_numel(&self.shape).and_then(|n| n.checked_mul(self.elem_size()));
        if want != Some(self.data.len()) {
            return Err(CoreError::data(
                "tensor",
                format!("{} bytes for shape {:?} of {:?}", self.data.len(), self.shape, self.dtype),
            ));
        }
        Ok(())
    }

    /// The values as f32, whatever the stored dtype. Errors if the byte length is off.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.validate()?;
        Ok(match self.dtype {
            DType::F32 => self.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            DType::F16 => self.data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        })
    }
}

fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_len(shape: &[usize], n: usize) -> Result<()> {
    match checked_numel(shape) {
        Some(want) if want == n => Ok(()),
        Some(want) => Err(CoreError::data("tensor", format!("shape {shape:?} needs {want} values, got {n}"))),
        None => Err(CoreError::data("tensor", format!("shape {shape:?} has more elements than fit in memory"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn f32_and_f16_round_trip() {
        let v = [0.0f32, 1.5, -2.25, 1e-3];
        assert_eq!(Tensor::from_f32(vec![2, 2], &v).unwrap().to_f32().unwrap(), v);
        let h = Tensor::from_f32_as_f16(vec![4], &v).unwrap().to_f32().unwrap();
        for (a, b) in v.iter().zip(&h) {
            assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0));
        }
        assert!(Tensor::from_f32(vec![3], &v).is_err());
    }
}

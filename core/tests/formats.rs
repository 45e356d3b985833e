//! Round trips and corruption handling of the `.scdd` latent-code and `.scddg` bundle formats.
use proptest::prelude::*;
use scdd_core::bundle::{GeneratorBundle, F16_OF};
use scdd_core::codes::{LatentCodes, Provenance};
use scdd_core::format::{self, HEADER_LEN};
use scdd_core::graph::{Activation, DenoiserSpec, ExpressionSpace, GraphSpec, Layer, NoiseSchedule, Stack};
use scdd_core::tensor::{DType, Tensor};
use scdd_core::CoreError;
use sha2::Digest;
use std::collections::BTreeMap;

// ------------------------------------------------------------------------------------------
// Builders
// ------------------------------------------------------------------------------------------

/// A deterministic pseudo-random stream (splitmix64) so tests don't need a rand dependency.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

fn provenance(seed: u64) -> Provenance {
    let mut params = BTreeMap::new();
    params.insert("steps".to_string(), "100".to_string());
    params.insert("lr".to_string(), "0.01".to_string());
    Provenance {
        source_name: "pbmc3k".into(),
        source_shape: (2638, 13714),
        method: "dm+dc".into(),
        seed,
        scdd_version: scdd_core::SCDD_VERSION.into(),
        created: "2025-01-01T00:00:00Z".into(),
        params,
    }
}

fn codes(labels: Vec<u32>, n_classes: usize, dim: usize, f16: bool, seed: u64, generator_id: &str) -> LatentCodes {
    let values = Mix(seed).vec(labels.len() * dim);
    let shape = vec![labels.len(), dim];
    let codes = if f16 {
        Tensor::from_f32_as_f16(shape, &values).unwrap()
    } else {
        Tensor::from_f32(shape, &values).unwrap()
    };
    LatentCodes {
        codes,
        labels,
        classes: (0..n_classes).map(|c| format!("class {c} ü")).collect(),
        label_column: "cell_type".into(),
        spc: 2,
        timestep: 7,
        generator_id: generator_id.into(),
        provenance: provenance(seed),
    }
}

#[derive(Clone, Debug)]
struct BundleParams {
    n_genes: usize,
    latent: usize,
    enc_hidden: Vec<usize>,
    dec_hidden: Vec<usize>,
    den_hidden: Vec<usize>,
    emb_half: usize,
    n_classes: usize,
    task_head: bool,
    f16: bool,
    seed: u64,
}

fn bundle_params() -> impl Strategy<Value = BundleParams> {
    (
        (1usize..12, 1usize..6, prop::collection::vec(1usize..8, 0..3), prop::collection::vec(1usize..8, 0..3)),
        (prop::collection::vec(1usize..8, 1..4), 1usize..4, 1usize..5),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_map(|((n_genes, latent, enc_hidden, dec_hidden), (den_hidden, emb_half, n_classes), (task_head, f16, seed))| {
            BundleParams { n_genes, latent, enc_hidden, dec_hidden, den_hidden, emb_half, n_classes, task_head, f16, seed }
        })
}

fn bundle(p: &BundleParams) -> GeneratorBundle {
    let encoder =
        Stack::mlp("encoder", p.n_genes, &p.enc_hidden, p.latent, 0.4, 0.5, vec![Layer::L2Normalize { eps: 1e-12 }]);
    let decoder = Stack::mlp("decoder", p.latent, &p.dec_hidden, p.n_genes, 0.0, 0.1, vec![Layer::Act(Activation::Softplus)]);
    let denoiser = DenoiserSpec {
        latent_dim: p.latent,
        hidden: p.den_hidden.clone(),
        emb_dim: 2 * p.emb_half,
        n_classes: p.n_classes,
        norm_eps: 1e-5,
    };
    let task_head = p.task_head.then(|| Stack {
        prefix: "head".into(),
        layers: vec![
            Layer::Linear { in_dim: p.latent, out_dim: 4, bias: true },
            Layer::LayerNorm { dim: 4, eps: 1e-5 },
            Layer::Act(Activation::Relu),
            Layer::Linear { in_dim: 4, out_dim: p.n_classes, bias: false },
        ],
    });
    let spec = GraphSpec {
        n_genes: p.n_genes,
        latent_dim: p.latent,
        space: ExpressionSpace::default(),
        encoder: Some(encoder),
        decoder,
        denoiser: Some(denoiser),
        schedule: NoiseSchedule { beta_min: 1e-4, beta_max: 0.02, steps: 50 },
        task_head,
    };
    spec.validate().unwrap();
    let mut rng = Mix(p.seed);
    let tensors = spec
        .params()
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let v = rng.vec(n);
            let t = if p.f16 { Tensor::from_f32_as_f16(shape, &v) } else { Tensor::from_f32(shape, &v) };
            (name, t.unwrap())
        })
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("report".to_string(), "{\"loss\": 0.1}".to_string());
    let b = GeneratorBundle {
        spec,
        genes: (0..p.n_genes).map(|g| format!("GENE{g}")).collect(),
        label_column: "cell_type".into(),
        classes: (0..p.n_classes).map(|c| format!("type {c}")).collect(),
        tensors,
        metadata,
    };
    b.validate().unwrap();
    b
}

fn small_bundle() -> GeneratorBundle {
    bundle(&BundleParams {
        n_genes: 6,
        latent: 3,
        enc_hidden: vec![5],
        dec_hidden: vec![4],
        den_hidden: vec![4, 2],
        emb_half: 2,
        n_classes: 3,
        task_head: true,
        f16: false,
        seed: 1,
    })
}

/// Rewrites the header checksum so a modified payload passes the checksum and reaches the
/// decoder.
fn reseal(bytes: &mut [u8]) {
    let digest = sha2::Sha256::digest(&bytes[HEADER_LEN..]);
    bytes[24..56].copy_from_slice(&digest);
}

fn variant(e: &CoreError) -> &'static str {
    match e {
        CoreError::InvalidData { .. } => "InvalidData",
        CoreError::InvalidParam { .. } => "InvalidParam",
        CoreError::BadMagic { .. } => "BadMagic",
        CoreError::UnsupportedVersion { .. } => "UnsupportedVersion",
        CoreError::Truncated { .. } => "Truncated",
        CoreError::Checksum { .. } => "Checksum",
        CoreError::Decode { .. } => "Decode",
        CoreError::Mismatch(_) => "Mismatch",
    }
}

/// What a changed header byte at `pos` must give.
fn header_expectation(pos: usize) -> &'static [&'static str] {
    match pos {
        0..=7 => &["BadMagic"],
        8..=11 => &["UnsupportedVersion"],
        12..=15 => &["Decode"],              // reserved flags must be 0
        16..=23 => &["Truncated", "Decode"], // longer than the file / bytes trail
        _ => &["Checksum"],
    }
}

// ------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn latent_codes_round_trip_exactly(
        n_classes in 1usize..6,
        raw_labels in prop::collection::vec(any::<u32>(), 0..40),
        dim in 1usize..16,
        f16 in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let labels: Vec<u32> = raw_labels.iter().map(|l| l % n_classes as u32).collect();
        let c = codes(labels, n_classes, dim, f16, seed, "abc123");
        let bytes = c.to_bytes();
        prop_assert_eq!(&bytes[..8], b"SCDDCODE");
        let back = LatentCodes::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(back.codes.dtype, if f16 { DType::F16 } else { DType::F32 });
        // encoding is deterministic
        prop_assert_eq!(back.to_bytes(), bytes);
    }

    #[test]
    fn f32_codes_to_f16_round_trip(seed in any::<u64>(), n in 1usize..20) {
        let c = codes((0..n as u32).map(|i| i % 3).collect(), 3, 8, false, seed, "g");
        let h = c.to_f16().unwrap();
        prop_assert_eq!(h.codes.dtype, DType::F16);
        prop_assert_eq!(h.codes.data.len(), c.codes.data.len() / 2);
        let back = LatentCodes::from_bytes(&h.to_bytes()).unwrap();
        prop_assert_eq!(&back, &h);
        for (a, b) in c.codes.to_f32().unwrap().iter().zip(back.codes.to_f32().unwrap()) {
            prop_assert!((a - b).abs() <= 2e-3, "{} vs {}", a, b);
        }
    }

    #[test]
    fn generator_bundle_round_trips_exactly(p in bundle_params()) {
        let b = bundle(&p);
        let bytes = b.to_bytes();
        prop_assert_eq!(&bytes[..8], b"SCDDGENB");
        let back = GeneratorBundle::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert_eq!(back.generator_id(), b.generator_id());
        prop_assert_eq!(back.to_bytes(), bytes);
        // the slimmed bundle round-trips too and keeps the id
        let slim = b.without_encoder();
        prop_assert!(slim.spec.encoder.is_none());
        prop_assert!(!slim.tensors.keys().any(|k| k.starts_with("encoder.")));
        let slim_back = GeneratorBundle::from_bytes(&slim.to_bytes()).unwrap();
        prop_assert_eq!(slim_back.generator_id(), b.generator_id());
    }

    // --------------------------------------------------------------------------------------
    // Corruption
    // --------------------------------------------------------------------------------------

    #[test]
    fn flipped_payload_byte_is_a_checksum_error(pos in any::<prop::sample::Index>(), mask in 1u8..=255, f16 in any::<bool>()) {
        let bytes = codes(vec![0, 1, 1, 2], 3, 5, f16, 3, "gid").to_bytes();
        let mut bad = bytes.clone();
        let i = HEADER_LEN + pos.index(bytes.len() - HEADER_LEN);
        bad[i] ^= mask;
        let e = LatentCodes::from_bytes(&bad).unwrap_err();
        prop_assert!(matches!(e, CoreError::Checksum { .. }), "byte {}: {:?}", i, e);
        prop_assert!(e.to_string().contains("corrupted"), "{}", e);
    }

    #[test]
    fn flipped_bundle_payload_byte_is_a_checksum_error(pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let bytes = small_bundle().to_bytes();
        let mut bad = bytes.clone();
        let i = HEADER_LEN + pos.index(bytes.len() - HEADER_LEN);
        bad[i] ^= mask;
        let e = GeneratorBundle::from_bytes(&bad).unwrap_err();
        prop_assert!(matches!(e, CoreError::Checksum { .. }), "byte {}: {:?}", i, e);
    }

    #[test]
    fn flipped_header_byte_is_the_right_error(pos in 0usize..HEADER_LEN, mask in 1u8..=255) {
        for bytes in [codes(vec![0, 1], 2, 3, false, 9, "g").to_bytes(), small_bundle().to_bytes()] {
            let mut bad = bytes.clone();
            bad[pos] ^= mask;
            let e = if &bytes[..8] == b"SCDDCODE" {
                LatentCodes::from_bytes(&bad).map(|_| ()).unwrap_err()
            } else {
                GeneratorBundle::from_bytes(&bad).map(|_| ()).unwrap_err()
            };
            let want = header_expectation(pos);
            prop_assert!(want.contains(&variant(&e)), "byte {} ^ {:#04x}: got {:?}, want one of {:?}", pos, mask, e, want);
        }
    }

    #[test]
    fn truncated_file_is_truncated(cut in any::<prop::sample::Index>()) {
        for bytes in [codes(vec![0, 1, 2], 3, 4, true, 5, "g").to_bytes(), small_bundle().to_bytes()] {
            let keep = cut.index(bytes.len()); // 0 ..= len-1: always shorter than the file
            let short = &bytes[..keep];
            let e = if &bytes[..8] == b"SCDDCODE" {
                LatentCodes::from_bytes(short).map(|_| ()).unwrap_err()
            } else {
                GeneratorBundle::from_bytes(short).map(|_| ()).unwrap_err()
            };
            match &e {
                CoreError::Truncated { expected, found, .. } => {
                    prop_assert_eq!(*found, keep as u64);
                    prop_assert!(*expected > *found);
                    prop_assert!(*expected <= bytes.len() as u64);
                }
                other => prop_assert!(false, "cut at {}: {:?}", keep, other),
            }
        }
    }

    /// Arbitrary bytes never panic and (without the magic) are never accepted.
    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        prop_assert!(LatentCodes::from_bytes(&bytes).is_err());
        prop_assert!(GeneratorBundle::from_bytes(&bytes).is_err());
    }

    /// A valid header followed by random bytes with a matching checksum: the decoder itself
    /// sees garbage. It must return an error, not panic or try to allocate what a length
    /// prefix claims.
    #[test]
    fn random_payload_with_valid_checksum_never_panics(payload in prop::collection::vec(any::<u8>(), 0..400)) {
        for kind in [&scdd_core::codes::KIND, &scdd_core::bundle::KIND] {
            let mut bytes = format::encode(kind, &());
            bytes.truncate(HEADER_LEN);
            bytes[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&payload);
            reseal(&mut bytes);
            let _ = LatentCodes::from_bytes(&bytes);
            let _ = GeneratorBundle::from_bytes(&bytes);
        }
    }

    /// A valid file with payload bytes changed (checksum recomputed): structured garbage
    /// (huge length prefixes, bad enum tags, wrong tensor sizes) must give an error or a
    /// value that validates, never a panic or an abort.
    #[test]
    fn resealed_mutations_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        bundle_file in any::<bool>(),
    ) {
        let bytes = if bundle_file { small_bundle().to_bytes() } else { codes(vec![0, 2, 1], 3, 4, false, 2, "gid").to_bytes() };
        let mut bad = bytes.clone();
        for (pos, v) in &edits {
            let i = HEADER_LEN + pos.index(bytes.len() - HEADER_LEN);
            bad[i] = *v;
        }
        reseal(&mut bad);
        if bundle_file {
            if let Ok(b) = GeneratorBundle::from_bytes(&bad) {
                b.validate().unwrap();
            }
        } else if let Ok(c) = LatentCodes::from_bytes(&bad) {
            c.validate().unwrap();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Specific errors and their messages
// ------------------------------------------------------------------------------------------

#[test]
fn each_failure_has_its_own_error_and_message() {
    let code_bytes = codes(vec![0, 1], 2, 3, false, 1, "g").to_bytes();
    let bundle_bytes = small_bundle().to_bytes();

    // A code file read as a bundle (and vice versa): wrong magic.
    let wrong_magic = GeneratorBundle::from_bytes(&code_bytes).unwrap_err();
    assert!(matches!(wrong_magic, CoreError::BadMagic { .. }), "{wrong_magic:?}");
    let m = wrong_magic.to_string();
    assert!(m.contains("not a scdd generator bundle (.scddg) file") && m.contains("SCDDCODE"), "{m}");
    let e = LatentCodes::from_bytes(&bundle_bytes).unwrap_err();
    assert!(matches!(e, CoreError::BadMagic { .. }) && e.to_string().contains("SCDDGENB"), "{e}");

    // A newer version.
    let mut newer = code_bytes.clone();
    newer[8..12].copy_from_slice(&2u32.to_le_bytes());
    let newer_e = LatentCodes::from_bytes(&newer).unwrap_err();
    assert!(matches!(newer_e, CoreError::UnsupportedVersion { found: 2, supported: 1, .. }), "{newer_e:?}");
    let m = newer_e.to_string();
    assert!(m.contains("version 2") && m.contains("upgrade"), "{m}");
    // Version 0 is no version any scdd writes.
    let mut zero = code_bytes.clone();
    zero[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(LatentCodes::from_bytes(&zero).unwrap_err(), CoreError::UnsupportedVersion { found: 0, .. }));

    // Truncated payload, truncated header, truncated magic, empty file.
    let trunc = LatentCodes::from_bytes(&code_bytes[..code_bytes.len() - 1]).unwrap_err();
    let m = trunc.to_string();
    assert!(
        m.contains("truncated") && m.contains(&format!("expected {} bytes, found {}", code_bytes.len(), code_bytes.len() - 1)),
        "{m}"
    );
    let header = LatentCodes::from_bytes(&code_bytes[..20]).unwrap_err();
    assert!(header.to_string().contains(&format!("expected {HEADER_LEN} bytes, found 20")), "{header}");
    assert!(matches!(LatentCodes::from_bytes(&code_bytes[..3]).unwrap_err(), CoreError::Truncated { found: 3, .. }));
    assert!(matches!(LatentCodes::from_bytes(&[]).unwrap_err(), CoreError::Truncated { found: 0, .. }));
    // A length field damaged far beyond the file is a damaged header, not a truncated file.
    let mut big_len = code_bytes.clone();
    big_len[23] = 0x40;
    let e = LatentCodes::from_bytes(&big_len).unwrap_err();
    assert!(matches!(e, CoreError::Decode { .. }) && e.to_string().contains("damaged header"), "{e}");
    // ... but three bytes of something else are the wrong magic.
    assert!(matches!(LatentCodes::from_bytes(b"PK\x03").unwrap_err(), CoreError::BadMagic { .. }));

    // Corrupted payload.
    let mut flipped = code_bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    let checksum = LatentCodes::from_bytes(&flipped).unwrap_err();
    assert!(matches!(checksum, CoreError::Checksum { .. }));
    let m = checksum.to_string();
    assert!(m.contains("corrupted") && m.contains("checksum"), "{m}");

    // Trailing bytes, non-zero flags, undecodable payload.
    let mut trailing = code_bytes.clone();
    trailing.push(0);
    let trailing_e = LatentCodes::from_bytes(&trailing).unwrap_err();
    assert!(matches!(trailing_e, CoreError::Decode { .. }) && trailing_e.to_string().contains("1 trailing bytes"));
    let mut flags = code_bytes.clone();
    flags[12] = 1;
    let flags_e = LatentCodes::from_bytes(&flags).unwrap_err();
    assert!(flags_e.to_string().contains("reserved header flags"), "{flags_e}");
    let mut garbage = format::encode(&scdd_core::codes::KIND, &"not codes");
    reseal(&mut garbage);
    let decode_e = LatentCodes::from_bytes(&garbage).unwrap_err();
    assert!(matches!(decode_e, CoreError::Decode { .. }), "{decode_e:?}");

    // All messages differ and name the file kind.
    let all = [&wrong_magic, &newer_e, &trunc, &checksum, &trailing_e, &decode_e].map(|e| e.to_string());
    for (i, a) in all.iter().enumerate() {
        assert!(a.contains("scdd"), "{a}");
        for b in &all[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let variants: std::collections::BTreeSet<_> =
        [&wrong_magic, &newer_e, &trunc, &checksum, &decode_e].iter().map(|e| variant(e)).collect();
    assert_eq!(variants.len(), 5);
}

/// A payload whose tensor length prefix claims an absurd size: refused without allocating it.
#[test]
fn huge_length_prefix_is_refused_without_allocating() {
    let c = codes(vec![0], 1, 2, false, 1, "g");
    let bytes = c.to_bytes();
    // The tensor's data is 8 bytes: its length prefix is the byte 8 followed by the 8 values.
    let payload = &bytes[HEADER_LEN..];
    let want: Vec<u8> = c.codes.data.clone();
    let at = payload.windows(9).position(|w| w[0] == 8 && w[1..] == want[..]).expect("tensor bytes in the payload");
    let mut bad = bytes.clone();
    // bincode varint: 253 = a u64 follows (little endian).
    let mut patched = bad[..HEADER_LEN + at].to_vec();
    patched.push(253);
    patched.extend_from_slice(&(1u64 << 50).to_le_bytes());
    patched.extend_from_slice(&bad[HEADER_LEN + at + 1..]);
    bad = patched;
    let len = (bad.len() - HEADER_LEN) as u64;
    bad[16..24].copy_from_slice(&len.to_le_bytes());
    reseal(&mut bad);
    let e = LatentCodes::from_bytes(&bad).unwrap_err();
    assert!(matches!(e, CoreError::Decode { .. }), "{e:?}");
}

/// A tensor whose shape overflows usize must be an error, not an arithmetic panic.
#[test]
fn absurd_tensor_shape_is_an_error() {
    let t = Tensor { shape: vec![usize::MAX, 3], dtype: DType::F32, data: vec![0; 12] };
    assert!(t.to_f32().is_err());
    assert!(t.validate().is_err());
    let mut c = codes(vec![], 1, 2, false, 1, "g");
    c.codes = Tensor { shape: vec![0, usize::MAX], dtype: DType::F16, data: vec![] };
    // 0 × MAX = 0 elements: structurally fine
    c.validate().unwrap();
    c.codes.shape = vec![1usize << 40, 1 << 40];
    c.labels = vec![];
    assert!(c.validate().is_err());
    assert!(Tensor::from_f32(vec![usize::MAX, 2], &[]).is_err());
}

#[test]
fn bundle_with_inconsistent_tensor_bytes_is_refused() {
    let mut b = small_bundle();
    let name = b.tensors.keys().next().unwrap().clone();
    b.tensors.get_mut(&name).unwrap().data.pop();
    let e = GeneratorBundle::from_bytes(&b.to_bytes()).unwrap_err();
    assert!(matches!(e, CoreError::InvalidData { .. }) && e.to_string().contains(&name), "{e}");
}

// ------------------------------------------------------------------------------------------
// generator_id
// ------------------------------------------------------------------------------------------

#[test]
fn generator_id_is_stable_under_slimming_and_sensitive_to_the_decoder() {
    let b = small_bundle();
    let id = b.generator_id();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(b.clone().generator_id(), id, "deterministic");
    assert_eq!(b.without_encoder().generator_id(), id, "dropping the encoder keeps the id");

    let mut m = b.clone();
    m.metadata.insert("note".into(), "edited".into());
    assert_eq!(m.generator_id(), id, "metadata is not part of the id");
    let mut h = b.clone();
    h.spec.task_head = None;
    h.tensors.retain(|k, _| !k.starts_with("head."));
    assert_eq!(h.generator_id(), id, "the task head is not part of the id");
    let mut e = b.clone();
    let enc_name = e.tensors.keys().find(|k| k.starts_with("encoder.")).unwrap().clone();
    e.tensors.insert(enc_name, Tensor::from_f32(vec![5, 6], &[0.5; 30]).unwrap());
    assert_eq!(e.generator_id(), id, "encoder weights are not part of the id");

    // Anything that changes decoding changes the id.
    let changed = |f: &dyn Fn(&mut GeneratorBundle)| {
        let mut c = b.clone();
        f(&mut c);
        c.generator_id()
    };
    let dec = b.tensors.keys().find(|k| k.starts_with("decoder.") && k.ends_with("weight")).unwrap().clone();
    let tweak_tensor = |name: String| {
        move |c: &mut GeneratorBundle| {
            let t = c.tensors.get_mut(&name).unwrap();
            let mut v = t.to_f32().unwrap();
            v[0] += 1e-3;
            *t = Tensor::from_f32(t.shape.clone(), &v).unwrap();
        }
    };
    assert_ne!(changed(&tweak_tensor(dec)), id, "a decoder tensor");
    assert_ne!(changed(&tweak_tensor("denoiser.class_table".into())), id, "a denoiser tensor");
    assert_ne!(changed(&|c| c.genes.swap(0, 1)), id, "gene order");
    assert_ne!(changed(&|c| c.classes[0] = "renamed".into()), id, "class names");
    assert_ne!(changed(&|c| c.spec.schedule.steps += 1), id, "noise schedule");
    assert_ne!(changed(&|c| c.spec.space.target_sum = 1e6), id, "expression space");
    // The same values stored as f16 decode differently: another id.
    let mut f = b.clone();
    for t in f.tensors.values_mut() {
        *t = Tensor::from_f32_as_f16(t.shape.clone(), &t.to_f32().unwrap()).unwrap();
    }
    assert_ne!(f.generator_id(), id, "tensor dtype");
}

#[test]
fn recipient_bundles_decode_the_codes_of_their_source_and_no_others() {
    let b = small_bundle();
    let id = b.generator_id();
    let c = codes(vec![0, 1], b.classes.len(), b.spec.latent_dim, false, 3, &id);
    let mut c = c;
    c.classes = b.classes.clone();
    c.label_column = b.label_column.clone();
    c.compatibility(&b).unwrap();

    let slim = b.for_recipients(false).unwrap();
    assert!(slim.spec.encoder.is_none() && slim.spec.task_head.is_none());
    assert!(slim.tensors.keys().all(|k| !k.starts_with("encoder.") && !k.starts_with("head.")), "{:?}", slim.tensors.keys());
    assert_eq!(slim.generator_id(), id);
    assert!(!slim.metadata.contains_key(F16_OF));
    slim.validate().unwrap();
    c.compatibility(&slim).unwrap();

    let half = b.for_recipients(true).unwrap();
    half.validate().unwrap();
    assert!(half.tensors.values().all(|t| t.dtype == DType::F16));
    let weight_bytes = |b: &GeneratorBundle| b.tensors.values().map(|t| t.data.len()).sum::<usize>();
    assert_eq!(weight_bytes(&half) * 2, weight_bytes(&slim), "f16 halves the weights");
    assert_ne!(half.generator_id(), id, "its own content differs…");
    assert_eq!(half.metadata[F16_OF], id, "…and it names its source");
    c.compatibility(&half).unwrap();
    // A copy of the copy still names the original; a round trip through bytes keeps it.
    let again = GeneratorBundle::from_bytes(&half.for_recipients(true).unwrap().to_bytes()).unwrap();
    assert_eq!(again.metadata[F16_OF], id);
    c.compatibility(&again).unwrap();

    // Codes of another generator are refused by the copy as by the original.
    let mut other = c.clone();
    other.generator_id = "ab".repeat(32);
    assert!(other.compatibility(&half).unwrap_err().contains("made for generator abababababab"));
}

// ------------------------------------------------------------------------------------------
// merge
// ------------------------------------------------------------------------------------------

#[test]
fn merge_disjoint_classes() {
    let a = codes(vec![2, 0, 2], 4, 3, false, 1, "gen");
    let b = codes(vec![1, 3], 4, 3, false, 2, "gen");
    let m = LatentCodes::merge(&[a.clone(), b.clone()]).unwrap();
    m.validate().unwrap();
    assert_eq!(m.labels, vec![0, 1, 2, 2, 3]);
    assert_eq!(m.codes.shape, vec![5, 3]);
    assert_eq!(m.generator_id, "gen");
    let (va, vb, vm) = (a.codes.to_f32().unwrap(), b.codes.to_f32().unwrap(), m.codes.to_f32().unwrap());
    // class 0 from a (row 1), class 1 from b (row 0), class 2 from a (rows 0, 2 in order), class 3 from b
    let rows = |v: &[f32], r: usize| v[r * 3..r * 3 + 3].to_vec();
    assert_eq!(rows(&vm, 0), rows(&va, 1));
    assert_eq!(rows(&vm, 1), rows(&vb, 0));
    assert_eq!(rows(&vm, 2), rows(&va, 0));
    assert_eq!(rows(&vm, 3), rows(&va, 2));
    assert_eq!(rows(&vm, 4), rows(&vb, 1));
    assert_eq!(m.provenance.params.get("merged_from").map(String::as_str), Some("2"));
    // the merged file round-trips; f16 parts give f16
    assert_eq!(LatentCodes::from_bytes(&m.to_bytes()).unwrap(), m);
    let h = LatentCodes::merge(&[a.to_f16().unwrap(), b.to_f16().unwrap()]).unwrap();
    assert_eq!(h.codes.dtype, DType::F16);
    assert_eq!(h.labels, m.labels);
    // a single part is fine too
    assert_eq!(LatentCodes::merge(std::slice::from_ref(&a)).unwrap().labels, vec![0, 2, 2]);
}

#[test]
fn merge_refuses_overlap_other_generator_and_misfits() {
    let a = codes(vec![0, 1], 3, 2, false, 1, "gen-a");
    let overlap = codes(vec![1, 2], 3, 2, false, 2, "gen-a");
    let e = LatentCodes::merge(&[a.clone(), overlap]).unwrap_err();
    assert!(matches!(e, CoreError::Mismatch(_)) && e.to_string().contains("disjoint") && e.to_string().contains("class 1"), "{e}");

    let other = codes(vec![2], 3, 2, false, 3, "gen-b");
    let e = LatentCodes::merge(&[a.clone(), other]).unwrap_err();
    assert!(e.to_string().contains("generator") && e.to_string().contains("gen-b"), "{e}");

    let wider = codes(vec![2], 3, 5, false, 3, "gen-a");
    assert!(LatentCodes::merge(&[a.clone(), wider]).is_err());
    let mut later = codes(vec![2], 3, 2, false, 3, "gen-a");
    later.timestep += 1;
    assert!(LatentCodes::merge(&[a.clone(), later]).is_err());
    let fewer_classes = codes(vec![1], 2, 2, false, 3, "gen-a");
    assert!(LatentCodes::merge(&[a.clone(), fewer_classes]).is_err());

    // A label out of range in an unvalidated part is an error, not a panic.
    let mut broken = codes(vec![2], 3, 2, false, 3, "gen-a");
    broken.labels = vec![9];
    assert!(LatentCodes::merge(&[a, broken]).is_err());
    assert!(LatentCodes::merge(&[]).is_err());
}

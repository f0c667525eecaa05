//! Comparing the ranks' configs with one all-reduce: each rank hashes its fields into buckets, the ranks sum the
//! buckets, and a bucket whose sum is not `nodes` times this rank's own holds a field some rank disagrees on.

/// Buckets the fields are hashed into; a differing field is named with the others of its bucket.
const BUCKETS: usize = 1024;
/// Each bucket's 64-bit hash travels as 8 bytes, one per f32: sums of up to 65 793 ranks stay exact in f32.
const BYTES: usize = 8;

/// FNV-1a: the same on every machine and Rust release (std's hasher promises neither).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn bucket(path: &str) -> usize {
    (fnv1a(&[path.as_bytes()]) % BUCKETS as u64) as usize
}

/// This rank's buckets, as the f32 buffer the ranks sum.
pub(crate) fn buffer(fields: &[(String, String)]) -> Vec<f32> {
    let mut words = [0u64; BUCKETS];
    for (path, value) in fields {
        words[bucket(path)] ^= fnv1a(&[path.as_bytes(), value.as_bytes()]);
    }
    words
        .iter()
        .flat_map(|word| word.to_le_bytes().map(f32::from))
        .collect()
}

/// The fields of `fields` (as `path = value`) in the buckets where `sum` (over `nodes` ranks) is not `nodes` times
/// this rank's own: empty when every rank has the same fields.
pub(crate) fn differing(fields: &[(String, String)], sum: &[f32], nodes: u32) -> Vec<String> {
    let own = buffer(fields);
    let mut buckets: Vec<usize> = (0..BUCKETS)
        .filter(|b| (b * BYTES..(b + 1) * BYTES).any(|i| sum[i] != own[i] * nodes as f32))
        .collect();
    buckets.sort_unstable();
    let mut named = Vec::new();
    for b in buckets {
        let here: Vec<String> = fields
            .iter()
            .filter(|(path, _)| bucket(path) == b)
            .map(|(path, value)| format!("{path} = {value} here"))
            .collect();
        if here.is_empty() {
            named.push("a field this rank does not have".to_string());
        }
        named.extend(here);
    }
    named
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sum(ranks: &[Vec<(String, String)>]) -> Vec<f32> {
        let buffers: Vec<_> = ranks.iter().map(|f| buffer(f)).collect();
        (0..buffers[0].len())
            .map(|i| buffers.iter().map(|b| b[i]).sum())
            .collect()
    }

    #[test]
    fn equal_configs_agree_and_a_changed_field_is_named_on_every_rank() {
        let a = fields(&[("lm.batch_size", "8"), ("lm.seed", "0"), ("weights", "abc")]);
        let b = fields(&[("lm.batch_size", "16"), ("lm.seed", "0"), ("weights", "abc")]);
        assert!(differing(&a, &sum(&[a.clone(), a.clone(), a.clone()]), 3).is_empty());
        let total = sum(&[a.clone(), a.clone(), b.clone()]);
        assert_eq!(differing(&a, &total, 3), ["lm.batch_size = 8 here"]);
        assert_eq!(differing(&b, &total, 3), ["lm.batch_size = 16 here"]);
    }

    #[test]
    fn a_field_only_one_rank_has_is_caught_by_both() {
        let a = fields(&[("lm.seed", "0")]);
        let b = fields(&[("lm.seed", "0"), ("lm.init", "/ckpt")]);
        let total = sum(&[a.clone(), b.clone()]);
        assert_eq!(differing(&a, &total, 2), ["a field this rank does not have"]);
        assert_eq!(differing(&b, &total, 2), ["lm.init = /ckpt here"]);
    }

    #[test]
    fn swapped_values_between_two_fields_are_caught() {
        let a = fields(&[("x", "1"), ("y", "2")]);
        let b = fields(&[("x", "2"), ("y", "1")]);
        assert_eq!(differing(&a, &sum(&[a.clone(), b.clone()]), 2).len(), 2);
    }
}

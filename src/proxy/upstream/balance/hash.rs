//! A stable hash: the same key maps to the same endpoint in every replica and every release.
//! (`std`'s hasher is randomly seeded per process, which would break that.)

/// FNV-1a over `bytes`, then a 64-bit finalizer so that similar keys spread well.
pub fn hash_bytes(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// [`hash_bytes`] with the default seed.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    hash_bytes(bytes, 0)
}

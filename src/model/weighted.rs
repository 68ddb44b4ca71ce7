//! Smooth weighted choice across a rule's backendRefs, precomputed so picking is one atomic add.

/// Longest schedule kept; larger weight sums are scaled down (error below 1/4096 of the total).
pub const MAX_SCHEDULE: u32 = 4096;

/// The smooth weighted round-robin order (nginx's algorithm) for `weights`, one full cycle.
///
/// Each entry is an index into `weights`. Zero weights never appear; an all-zero input gives an
/// empty schedule (the rule then has no backend to send to).
pub fn smooth_schedule(weights: &[u32]) -> Vec<u32> {
    let w: Vec<u64> = weights.iter().map(|&x| u64::from(x)).collect();
    smooth_schedule_u64(&w)
}

/// [`smooth_schedule`] over wider weights (backendRef weight × canary percentage).
pub fn smooth_schedule_u64(weights: &[u64]) -> Vec<u32> {
    let mut w: Vec<u64> = weights.to_vec();
    let g = w.iter().copied().filter(|&x| x > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    w.iter_mut().for_each(|x| *x /= g);
    let total: u64 = w.iter().sum();
    if total > u64::from(MAX_SCHEDULE) {
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * u64::from(MAX_SCHEDULE) / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if w[i] > 0 && best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best.unwrap_or(0);
        current[best] -= total;
        out.push(best as u32);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: &[u32], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| s.iter().filter(|&&x| x as usize == i).count())
            .collect()
    }

    #[test]
    fn ninety_ten_is_exact_over_a_cycle_and_interleaved() {
        let s = smooth_schedule(&[90, 10]);
        assert_eq!(s.len(), 10);
        assert_eq!(counts(&s, 2), vec![9, 1]);
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weights_never_picked() {
        assert_eq!(smooth_schedule(&[0, 3]), vec![1]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_small_shares() {
        let s = smooth_schedule(&[1_000_000, 1]);
        assert!(s.len() as u32 <= MAX_SCHEDULE + 1);
        assert_eq!(counts(&s, 2)[1], 1);
        let s = smooth_schedule(&[999_983, 1_000_003]);
        let c = counts(&s, 2);
        assert!((c[0] as i64 - c[1] as i64).abs() <= 1, "{c:?}");
    }
}

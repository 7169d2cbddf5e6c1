//! Static memory planning: places intermediates with known sizes and lifetimes (first and
//! last step that touches them) into one arena so that buffers whose lifetimes do not overlap
//! share memory. Greedy by size, largest first, each at the lowest offset that does not
//! collide with an already placed buffer alive at the same time; offsets are 64-byte aligned.

/// One buffer to place: its size in bytes and the steps it is alive for (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Size in bytes.
    pub bytes: usize,
    /// First step that writes it.
    pub first: usize,
    /// Last step that reads it.
    pub last: usize,
}

/// Where each buffer lives in the arena.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Byte offset of each buffer, in the order given.
    pub offsets: Vec<usize>,
    /// Arena size: the peak memory of the intermediates.
    pub peak: usize,
    /// What the buffers would take without sharing.
    pub total: usize,
}

const ALIGN: usize = 64;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Places `buffers` in one arena.
pub fn plan(buffers: &[Lifetime]) -> ArenaPlan {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(buffers[i].bytes), buffers[i].first, i));
    let mut offsets = vec![0; buffers.len()];
    let mut placed: Vec<usize> = vec![];
    let mut peak = 0;
    for i in order {
        let b = buffers[i];
        let size = align(b.bytes);
        // Ranges of the arena taken by placed buffers alive during `b`, by offset.
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| buffers[j].first <= b.last && b.first <= buffers[j].last)
            .map(|&j| (offsets[j], offsets[j] + align(buffers[j].bytes)))
            .collect();
        taken.sort_unstable();
        let mut at = 0;
        for (start, end) in taken {
            if at + size <= start {
                break;
            }
            at = at.max(end);
        }
        offsets[i] = at;
        peak = peak.max(at + size);
        placed.push(i);
    }
    ArenaPlan {
        offsets,
        peak,
        total: buffers.iter().map(|b| align(b.bytes)).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(bytes: usize, first: usize, last: usize) -> Lifetime {
        Lifetime { bytes, first, last }
    }

    /// Checks that no two buffers alive at the same step overlap.
    fn assert_disjoint(buffers: &[Lifetime], plan: &ArenaPlan) {
        for i in 0..buffers.len() {
            for j in i + 1..buffers.len() {
                let (a, b) = (buffers[i], buffers[j]);
                if a.first <= b.last && b.first <= a.last {
                    let (ai, bi) = (plan.offsets[i], plan.offsets[j]);
                    assert!(
                        ai + a.bytes <= bi || bi + b.bytes <= ai,
                        "{i} and {j} overlap: {plan:?}"
                    );
                }
            }
            assert!(plan.offsets[i] + buffers[i].bytes <= plan.peak);
            assert_eq!(plan.offsets[i] % ALIGN, 0);
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // x0 -> x1 -> x2 -> x3: at most two alive at once.
        let buffers: Vec<Lifetime> = (0..4).map(|i| life(1000, i, i + 1)).collect();
        let p = plan(&buffers);
        assert_disjoint(&buffers, &p);
        assert_eq!(p.peak, 2 * align(1000));
        assert_eq!(p.total, 4 * align(1000));
    }

    #[test]
    fn random_lifetimes_never_collide() {
        let mut state = 12345u64;
        let mut next = |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as usize) % m
        };
        for _ in 0..200 {
            let n = 1 + next(30);
            let buffers: Vec<Lifetime> = (0..n)
                .map(|_| {
                    let first = next(40);
                    life(1 + next(5000), first, first + next(10))
                })
                .collect();
            let p = plan(&buffers);
            assert_disjoint(&buffers, &p);
            assert!(p.peak <= p.total);
        }
    }
}

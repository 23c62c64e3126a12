//! Connected components of verified near-duplicate pairs (union-find with
//! path halving). A component's representative is its smallest member, so
//! with members numbered in input order the representative is the first
//! occurrence, the row a de-duplication keeps.

/// Disjoint sets over `0..n`.
#[derive(Clone, Debug)]
pub struct Components {
    parent: Vec<u32>,
}

impl Components {
    /// `n` singletons.
    pub fn new(n: usize) -> Self {
        assert!(n <= u32::MAX as usize, "at most 2^32 members");
        Self { parent: (0..n as u32).collect() }
    }

    /// The representative of `x`'s component: its smallest member.
    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let grandparent = self.parent[self.parent[x] as usize];
            self.parent[x] = grandparent;
            x = grandparent as usize;
        }
        x
    }

    /// Joins the components of `a` and `b`; whether they were apart.
    pub fn union(&mut self, a: usize, b: usize) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        // The smaller root stays the root: the representative is the minimum.
        let (lo, hi) = (ra.min(rb), ra.max(rb));
        self.parent[hi] = lo as u32;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_representative_is_the_smallest_member() {
        let mut c = Components::new(6);
        assert!(c.union(4, 5));
        assert!(c.union(5, 2));
        assert!(!c.union(4, 2), "already joined");
        assert!(c.union(1, 3));
        let reps: Vec<usize> = (0..6).map(|x| c.find(x)).collect();
        assert_eq!(reps, [0, 1, 2, 1, 2, 2]);
    }
}

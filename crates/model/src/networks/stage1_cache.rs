//! A cache of SSHSNet's stage-1 outputs per slice, for prediction.
//!
//! The hybrid network runs its frozen 2D networks on every slice of every 3D window, and the
//! same slice crop comes back: test-time mirroring along the slice axis (left-right, the only
//! mirror of a spine model) presents the same slices in reverse order, and windows that overlap
//! along the slice axis share slices. The 2D networks see one slice at a time (instance norm per
//! slice, no mixing across the batch), so a slice's outputs depend only on its own values.
//! [`Stage1SliceCache`] keys them by those values, exactly: a hash finds candidates and the
//! stored input is compared value for value, so a hit can never be another slice's output.
//!
//! The cache holds at most a byte budget, oldest entries evicted first. Training never uses it
//! (every patch is new, and the values would need gradients' bookkeeping for nothing).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

use burn::tensor::Tensor;

/// The default budget of a predictor's cache: a batch of 4 windows of the lumbar 3D plan (24
/// slices of 64 x 80, 21 classes, 2 networks' fusion features) is about 75 MB.
pub const STAGE1_CACHE_BYTES: usize = 128 << 20;

/// One slice's stage-1 outputs.
#[derive(Debug, Clone)]
struct CachedSlice {
    serial: u64,
    input: Vec<f32>,
    /// `[1, classes, 1, h, w]`: the networks' mean probabilities.
    probabilities: Tensor<5>,
    /// `[1, features, 1, h / s, w / s]`: the networks' fusion-level features, concatenated.
    features: Tensor<5>,
    bytes: usize,
}

/// Stage-1 outputs of single slices keyed by the slice's exact input values (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct Stage1SliceCache {
    budget_bytes: usize,
    used_bytes: usize,
    by_hash: HashMap<u64, Vec<CachedSlice>>,
    /// (hash, serial), oldest first.
    order: VecDeque<(u64, u64)>,
    next_serial: u64,
    hits: u64,
    misses: u64,
}

fn hash_values(values: &[f32]) -> u64 {
    let mut hasher = DefaultHasher::new();
    values.len().hash(&mut hasher);
    for v in values {
        v.to_bits().hash(&mut hasher);
    }
    hasher.finish()
}

/// Same bits, so that -0.0 and 0.0 (or two NaNs) are not confused with each other.
fn same_values(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

impl Stage1SliceCache {
    /// An empty cache holding at most `budget_bytes` (inputs and outputs, as f32).
    pub fn new(budget_bytes: usize) -> Self {
        Stage1SliceCache {
            budget_bytes,
            used_bytes: 0,
            by_hash: HashMap::new(),
            order: VecDeque::new(),
            next_serial: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Slices found so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Slices looked up and not found so far.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The outputs stored for exactly these input values (counted as a hit or a miss).
    pub(crate) fn get(&mut self, input: &[f32]) -> Option<(Tensor<5>, Tensor<5>)> {
        let found = self
            .by_hash
            .get(&hash_values(input))
            .and_then(|entries| entries.iter().find(|e| same_values(&e.input, input)))
            .map(|e| (e.probabilities.clone(), e.features.clone()));
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// Stores a slice's outputs, evicting the oldest entries to stay within the budget; an entry
    /// larger than the whole budget is not stored.
    pub(crate) fn insert(&mut self, input: Vec<f32>, probabilities: Tensor<5>, features: Tensor<5>) {
        let bytes = 4 * (input.len() + probabilities.shape().num_elements() + features.shape().num_elements());
        if bytes > self.budget_bytes {
            return;
        }
        while self.used_bytes + bytes > self.budget_bytes {
            let Some((hash, serial)) = self.order.pop_front() else { break };
            if let Some(entries) = self.by_hash.get_mut(&hash) {
                if let Some(at) = entries.iter().position(|e| e.serial == serial) {
                    self.used_bytes -= entries.swap_remove(at).bytes;
                }
                if entries.is_empty() {
                    self.by_hash.remove(&hash);
                }
            }
        }
        let hash = hash_values(&input);
        let serial = self.next_serial;
        self.next_serial += 1;
        self.used_bytes += bytes;
        self.order.push_back((hash, serial));
        self.by_hash.entry(hash).or_default().push(CachedSlice { serial, input, probabilities, features, bytes });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    fn outputs(value: f32) -> (Tensor<5>, Tensor<5>) {
        let device = Device::flex();
        (Tensor::<5>::full([1, 2, 1, 2, 2], value, &device), Tensor::<5>::full([1, 1, 1, 1, 1], value, &device))
    }

    #[test]
    fn finds_only_exactly_equal_inputs_and_evicts_the_oldest() {
        // Each entry: 4 inputs + 8 + 1 outputs = 13 values, 52 bytes; room for two.
        let mut cache = Stage1SliceCache::new(110);
        let (p, f) = outputs(1.0);
        cache.insert(vec![1.0, 2.0, 3.0, 4.0], p, f);
        let (p, f) = outputs(2.0);
        cache.insert(vec![0.0, 0.0, 0.0, 0.0], p, f);
        assert_eq!(cache.len(), 2);
        let (p, _) = cache.get(&[1.0, 2.0, 3.0, 4.0]).expect("stored");
        assert_eq!(p.into_data().try_to_vec::<f32>().unwrap()[0], 1.0);
        // -0.0 is not 0.0 here: the network could tell them apart only through a sign, but a
        // cache must never guess.
        assert!(cache.get(&[-0.0, 0.0, 0.0, 0.0]).is_none());
        assert!(cache.get(&[1.0, 2.0, 3.0]).is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 2));
        let (p, f) = outputs(3.0);
        cache.insert(vec![5.0; 4], p, f);
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&[1.0, 2.0, 3.0, 4.0]).is_none(), "the oldest entry was evicted");
        assert!(cache.get(&[0.0; 4]).is_some() && cache.get(&[5.0; 4]).is_some());
        // Larger than the whole budget: not stored, nothing evicted.
        let (p, f) = outputs(4.0);
        cache.insert(vec![0.5; 40], p, f);
        assert_eq!(cache.len(), 2);
    }
}

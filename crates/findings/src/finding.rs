//! The five disc abnormalities spineseg identifies per disc level (issue 14), and the per-disc
//! record of which are present plus the Pfirrmann grade of disc degeneration.
//!
//! The order of [`Finding::ALL`] is the order of every array indexed by a finding
//! (`DiscFindings::present`, `FindingProbabilities::p`) and of the columns of the findings CSV.

use serde::{Deserialize, Serialize};

/// One disc abnormality. SPIDER grades each per disc; "Modic change" is Modic type > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    DiscHerniation,
    DiscNarrowing,
    DiscBulging,
    Spondylolisthesis,
    ModicChange,
}

impl Finding {
    /// All five, in the order of every per-finding array and CSV column.
    pub const ALL: [Finding; 5] = [
        Finding::DiscHerniation,
        Finding::DiscNarrowing,
        Finding::DiscBulging,
        Finding::Spondylolisthesis,
        Finding::ModicChange,
    ];

    /// The position of this finding in [`Finding::ALL`] (and in per-finding arrays).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Human readable name: "disc herniation", "Modic change".
    pub fn name(self) -> &'static str {
        match self {
            Finding::DiscHerniation => "disc herniation",
            Finding::DiscNarrowing => "disc narrowing",
            Finding::DiscBulging => "disc bulging",
            Finding::Spondylolisthesis => "spondylolisthesis",
            Finding::ModicChange => "Modic change",
        }
    }

    /// Snake-case key used in CSV columns and JSON: "disc_herniation", "modic_change".
    pub const fn key(self) -> &'static str {
        match self {
            Finding::DiscHerniation => "disc_herniation",
            Finding::DiscNarrowing => "disc_narrowing",
            Finding::DiscBulging => "disc_bulging",
            Finding::Spondylolisthesis => "spondylolisthesis",
            Finding::ModicChange => "modic_change",
        }
    }

    /// The finding whose [`key`](Finding::key) is `key` (exact, lower case), if any.
    pub fn from_key(key: &str) -> Option<Finding> {
        Finding::ALL.into_iter().find(|f| f.key() == key)
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Finding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Finding::from_key(s).ok_or_else(|| {
            let keys: Vec<&str> = Finding::ALL.iter().map(|f| f.key()).collect();
            format!("unknown finding '{s}' (expected one of {})", keys.join(", "))
        })
    }
}

/// The findings of one disc: which abnormalities are present (indexed like [`Finding::ALL`]) and
/// its Pfirrmann grade (1 = normal .. 5 = collapsed; always in 1..=5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscFindings {
    pub present: [bool; 5],
    pub pfirrmann: u8,
}

impl DiscFindings {
    /// Whether `finding` is present.
    pub fn has(&self, finding: Finding) -> bool {
        self.present[finding.index()]
    }
}

/// A model's output for one disc: the probability of each finding (indexed like
/// [`Finding::ALL`]) and of each Pfirrmann grade (index 0 = grade 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FindingProbabilities {
    pub p: [f32; 5],
    pub pfirrmann_probabilities: [f32; 5],
}

impl FindingProbabilities {
    /// The probability of `finding`.
    pub fn of(&self, finding: Finding) -> f32 {
        self.p[finding.index()]
    }

    /// The most probable Pfirrmann grade, 1..=5 (argmax + 1; the lowest grade wins a tie, and NaN
    /// entries never win).
    pub fn pfirrmann_grade(&self) -> u8 {
        let mut best = 0;
        for (i, &q) in self.pfirrmann_probabilities.iter().enumerate() {
            let current = self.pfirrmann_probabilities[best];
            if q > current || (current.is_nan() && !q.is_nan()) {
                best = i;
            }
        }
        best as u8 + 1
    }

    /// Decisions at one threshold per finding (`p >= threshold`) and the argmax Pfirrmann grade.
    pub fn decide(&self, thresholds: [f32; 5]) -> DiscFindings {
        DiscFindings { present: std::array::from_fn(|i| self.p[i] >= thresholds[i]), pfirrmann: self.pfirrmann_grade() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_names_and_keys() {
        let keys: Vec<&str> = Finding::ALL.iter().map(|f| f.key()).collect();
        assert_eq!(keys, ["disc_herniation", "disc_narrowing", "disc_bulging", "spondylolisthesis", "modic_change"]);
        assert_eq!(Finding::DiscHerniation.name(), "disc herniation");
        assert_eq!(Finding::ModicChange.to_string(), "Modic change");
        for (i, f) in Finding::ALL.into_iter().enumerate() {
            assert_eq!(f.index(), i);
            assert_eq!(Finding::from_key(f.key()), Some(f));
            assert_eq!(f.key().parse::<Finding>(), Ok(f));
        }
        assert_eq!(Finding::from_key("Disc_Herniation"), None);
        assert!("modic".parse::<Finding>().unwrap_err().contains("modic_change"));
    }

    #[test]
    fn serde_uses_keys() {
        assert_eq!(serde_json::to_string(&Finding::ModicChange).unwrap(), "\"modic_change\"");
        let f: Finding = serde_json::from_str("\"disc_bulging\"").unwrap();
        assert_eq!(f, Finding::DiscBulging);
    }

    #[test]
    fn pfirrmann_argmax() {
        let probs = |q: [f32; 5]| FindingProbabilities { p: [0.0; 5], pfirrmann_probabilities: q };
        assert_eq!(probs([0.1, 0.2, 0.5, 0.1, 0.1]).pfirrmann_grade(), 3);
        assert_eq!(probs([0.0, 0.0, 0.0, 0.0, 1.0]).pfirrmann_grade(), 5);
        // Ties go to the lowest grade; NaN never wins.
        assert_eq!(probs([0.4, 0.4, 0.2, 0.0, 0.0]).pfirrmann_grade(), 1);
        assert_eq!(probs([f32::NAN, 0.1, 0.3, 0.0, 0.0]).pfirrmann_grade(), 3);
    }

    #[test]
    fn decide_applies_thresholds() {
        let probs =
            FindingProbabilities { p: [0.9, 0.5, 0.49, 0.0, 1.0], pfirrmann_probabilities: [0.0, 1.0, 0.0, 0.0, 0.0] };
        let d = probs.decide([0.5; 5]);
        assert_eq!(d.present, [true, true, false, false, true]);
        assert_eq!(d.pfirrmann, 2);
        assert!(d.has(Finding::ModicChange));
        assert!(!d.has(Finding::DiscBulging));
    }
}

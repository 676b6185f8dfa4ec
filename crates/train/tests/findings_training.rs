//! The findings classifier's training loop end to end, in its own test binary: the network is
//! initialised from burn's process-wide random generator, which other tests of the crate's unit
//! test binary draw from concurrently, so bit-identical reruns hold per process, not next to
//! them.

use spineseg_infer::findings_model::{predict_findings, FindingsInput};
use spineseg_model::burn::tensor::Device;
use spineseg_model::{DiscFindingsNetConfig, FindingsHeadConfig};
use spineseg_train::findings::{train_findings, FindingsSample, FindingsTrainConfig};

#[test]
fn training_learns_a_separable_toy_task_and_reruns_bit_identically() {
    // Level 0 bright centre = herniation; dark = none. Every other finding follows it too.
    let px = [8, 8];
    let samples: Vec<FindingsSample> = (0..24)
        .map(|i| {
            let positive = i % 2 == 0;
            let roi: Vec<f32> = (0..64usize)
                .map(|p| {
                    let (y, x) = (p / 8, p % 8);
                    if positive && (2..6).contains(&y) && (2..6).contains(&x) {
                        2.0
                    } else {
                        -0.5 + (p % 3) as f32 * 0.1
                    }
                })
                .collect();
            FindingsSample {
                patient: format!("p{i}"),
                input: FindingsInput { level: 0, rois: vec![None, Some(roi)] },
                findings: [positive; 5],
                grade: if positive { 4 } else { 2 },
            }
        })
        .collect();
    let config =
        DiscFindingsNetConfig::new(vec![124], FindingsHeadConfig::Visual).with_roi_px(px).with_widths(vec![4, 8]);
    let settings =
        FindingsTrainConfig { steps: 120, batch_size: 8, learning_rate: 5e-3, max_shift_px: 1, ..Default::default() };
    let a = train_findings(&config, None, &samples, &settings, |_, _| {}).unwrap();
    let b = train_findings(&config, None, &samples, &settings, |_, _| {}).unwrap();
    assert_eq!(a.losses, b.losses);
    let first: f64 = a.losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = a.losses[a.losses.len() - 10..].iter().sum::<f64>() / 10.0;
    assert!(last < first * 0.7, "loss did not fall: {first} -> {last}");
    let inputs: Vec<FindingsInput> = samples.iter().map(|s| s.input.clone()).collect();
    let probs = predict_findings(&a.net, &config, &inputs, &Device::flex());
    let correct = probs.iter().zip(&samples).filter(|(p, s)| (p.findings[0] >= 0.5) == s.findings[0]).count();
    assert!(correct >= 22, "{correct} of 24");
}

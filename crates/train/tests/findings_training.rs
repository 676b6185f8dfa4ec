//! The findings classifier's training loop end to end, in its own test binary: the network is
//! initialised from burn's process-wide random generator, which other tests of the crate's unit
//! test binary draw from concurrently, so bit-identical reruns hold per process, not next to
//! them.

use spineseg_infer::findings_model::{predict_findings, FindingsInput};
use spineseg_model::burn::tensor::Device;
use spineseg_model::PROMPTS_PER_LEVEL;
use spineseg_model::{DiscFindingsNetConfig, FindingsHeadConfig};
use spineseg_train::findings::{
    train_findings, train_findings_with, FindingsSample, FindingsStage, FindingsTrainConfig,
};
use spineseg_train::findings_pretrain::ImageTextPretraining;

/// Level 0 bright centre = herniation; dark = none. Every other finding follows it too.
fn toy_samples() -> Vec<FindingsSample> {
    (0..24)
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
        .collect()
}

#[test]
fn training_learns_a_separable_toy_task_and_reruns_bit_identically() {
    let px = [8, 8];
    let samples = toy_samples();
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

#[test]
fn image_text_pretraining_aligns_then_hands_over_and_reruns_bit_identically() {
    let samples = toy_samples();
    let text_dim = 6;
    let config = DiscFindingsNetConfig::new(vec![124], FindingsHeadConfig::Text { text_dim, embed_dim: 4 })
        .with_roi_px([8, 8])
        .with_widths(vec![4, 8]);
    let prompts: Vec<f32> = (0..PROMPTS_PER_LEVEL * text_dim).map(|i| (i as f32 * 0.37).sin()).collect();
    // Two sentences (positive, negative levels), as the frozen encoder would embed them.
    let pretraining = ImageTextPretraining {
        steps: 60,
        sentence_of_sample: samples.iter().map(|s| usize::from(!s.findings[0])).collect(),
        sentence_embeddings: vec![0.9, 0.1, -0.3, 0.5, 0.2, -0.4, -0.2, 0.6, 0.4, -0.5, 0.1, 0.3],
    };
    let settings =
        FindingsTrainConfig { steps: 40, batch_size: 8, learning_rate: 5e-3, max_shift_px: 1, ..Default::default() };
    let run = || {
        let mut stages = Vec::new();
        let training = train_findings_with(
            &config,
            Some(prompts.clone()),
            &samples,
            &settings,
            Some(&pretraining),
            |stage, step, _| stages.push((stage, step)),
        )
        .unwrap();
        (training, stages)
    };
    let (a, stages) = run();
    let (b, _) = run();
    assert_eq!(a.pretrain_losses, b.pretrain_losses);
    assert_eq!(a.losses, b.losses);
    assert_eq!(a.pretrain_losses.len(), 60);
    assert_eq!(stages.len(), 100);
    assert_eq!(stages[0], (FindingsStage::ImageTextPretraining, 0));
    assert_eq!(stages[60], (FindingsStage::Supervised, 0));
    let first: f64 = a.pretrain_losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = a.pretrain_losses[50..].iter().sum::<f64>() / 10.0;
    assert!(last < first * 0.8, "the contrastive loss did not fall: {first} -> {last}");
    // The supervised steps start from the pretrained network, not from a fresh one.
    let plain = train_findings(&config, Some(prompts.clone()), &samples, &settings, |_, _| {}).unwrap();
    assert!(plain.pretrain_losses.is_empty());
    assert_ne!(plain.losses, a.losses);
    // A visual head has nothing to align.
    let visual =
        DiscFindingsNetConfig::new(vec![124], FindingsHeadConfig::Visual).with_roi_px([8, 8]).with_widths(vec![4, 8]);
    let error = train_findings_with(&visual, None, &samples, &settings, Some(&pretraining), |_, _, _| {}).unwrap_err();
    assert!(error.to_string().contains("text head"), "{error}");
}

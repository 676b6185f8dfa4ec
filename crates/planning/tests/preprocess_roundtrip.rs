//! Preprocessing and its inverse on small synthetic cases with oblique, anisotropic geometry:
//! fingerprint -> plan -> preprocess -> store -> load -> revert gives back the labels; a label
//! value the plan does not know is reported.

use spineseg_planning::fingerprint::{compute_fingerprint, FingerprintOptions};
use spineseg_planning::plan_from_fingerprint;
use spineseg_preprocessing::plan::{ConfigurationName, Plan, PlanOptions};
use spineseg_preprocessing::preprocess::{load_preprocessed, preprocess_case, revert_to_original, save_preprocessed, CaseVolumes};
use spineseg_io::{Geometry, Label, Spacing, Volume};
use std::collections::BTreeMap;

/// A sagittal-like scan stored as I, P, R tilted by 12 degrees, 0.8 x 0.8 x 3.5 mm, with a zero
/// margin (cropped away) and a blocky "spine" of three labels.
fn oblique_case(id: &str) -> CaseVolumes {
    let (s, c) = (12f64.to_radians().sin(), 12f64.to_radians().cos());
    let direction = [[0.0, 0.0, 1.0], [s, -c, 0.0], [-c, -s, 0.0]];
    let g = Geometry::new(Spacing::new([0.8, 0.8, 3.5]).unwrap(), [10.0, -4.0, 30.0], direction).unwrap();
    let shape = [24, 20, 6];
    let mut image = Volume::filled(shape, 0.0f32, g);
    let mut labels = Volume::filled(shape, 0 as Label, g);
    for k in 0..6 {
        for j in 1..19 {
            for i in 2..23 {
                image.set([i, j, k], 50.0 + (i * 3 + j) as f32 + 10.0 * k as f32);
                if (4..16).contains(&j) && (1..5).contains(&k) && (3..21).contains(&i) {
                    // Vertebra (20), disc (119), vertebra (21) along i (inferior-superior).
                    let value = match i {
                        3..=8 => 21,
                        9..=11 => 119,
                        _ => 20,
                    };
                    labels.set([i, j, k], value);
                }
            }
        }
    }
    CaseVolumes { id: id.into(), images: vec![image], labels: Some(labels) }
}

fn plan_for(cases: &[CaseVolumes], target: Option<[f64; 3]>) -> Plan {
    let options = FingerprintOptions { samples_per_case: 100, seed: 1, threads: 2 };
    let fingerprint = compute_fingerprint("oblique", vec!["T2".into()], BTreeMap::new(), cases, |c| Ok(c.clone()), &options).unwrap();
    assert_eq!(fingerprint.cases[0].spacing_mm, [3.5, 0.8, 0.8], "fingerprint spacing is canonical RAS");
    plan_from_fingerprint(&fingerprint, &PlanOptions { overwrite_target_spacing: target, ..Default::default() }).unwrap()
}

#[test]
fn identity_resampling_reverts_exactly_and_storage_round_trips() {
    let case = oblique_case("case_0");
    let plan = plan_for(std::slice::from_ref(&case), None);
    assert_eq!(plan.target_spacing_mm, [3.5, 0.8, 0.8]);
    assert_eq!(plan.labels.iter().map(|l| l.value).collect::<Vec<_>>(), [0, 20, 21, 119]);
    for config in [ConfigurationName::ThreeDFullres, ConfigurationName::TwoD] {
        let pre = preprocess_case(&case, &plan, config).unwrap();
        let p = &pre.properties;
        assert_eq!(p.canonical_shape, [6, 20, 24]);
        assert_eq!(p.shape_after_crop, [6, 18, 21]);
        assert_eq!(p.shape_after_resampling, p.shape_after_crop);
        assert_eq!(pre.images[0].geometry.orientation_code(), "RAS");
        // z-score: mean 0, std 1 over the cropped volume.
        let n = pre.images[0].len() as f64;
        let mean = pre.images[0].data().iter().map(|v| *v as f64).sum::<f64>() / n;
        assert!(mean.abs() < 1e-4, "{mean}");
        let seg = pre.seg.as_ref().unwrap();
        assert!(seg.data().iter().all(|c| *c < 4));

        let reverted = revert_to_original(seg, p, &plan).unwrap();
        assert_eq!(reverted.shape(), [24, 20, 6]);
        assert_eq!(reverted.geometry, case.labels.as_ref().unwrap().geometry);
        assert_eq!(reverted.data(), case.labels.as_ref().unwrap().data(), "{config}: revert should be exact");

        let dir = tempfile::tempdir().unwrap();
        save_preprocessed(dir.path(), &pre).unwrap();
        let loaded = load_preprocessed(dir.path(), "case_0").unwrap();
        assert_eq!(loaded, pre);
    }
}

#[test]
fn real_resampling_reverts_closely() {
    let case = oblique_case("case_1");
    // Coarser in-plane (0.8 -> 1.3 mm) and finer across slices (3.5 -> 2.0 mm).
    let plan = plan_for(std::slice::from_ref(&case), Some([2.0, 1.3, 1.3]));
    let pre = preprocess_case(&case, &plan, ConfigurationName::ThreeDFullres).unwrap();
    let p = &pre.properties;
    assert_eq!(p.shape_after_resampling, [10, 11, 13], "round(10.5) is 10, as Python rounds");
    // The preprocessed grid covers the cropped region exactly: its outer voxel edges coincide.
    let cropped_first_edge = p.canonical_geometry.voxel_to_world(p.crop.start.map(|s| s as f64 - 0.5));
    let resampled_first_edge = p.geometry_after_resampling.voxel_to_world([-0.5; 3]);
    for a in 0..3 {
        assert!((cropped_first_edge[a] - resampled_first_edge[a]).abs() < 1e-9);
    }
    let reverted = revert_to_original(pre.seg.as_ref().unwrap(), p, &plan).unwrap();
    let original = case.labels.as_ref().unwrap();
    assert_eq!(reverted.shape(), original.shape());
    assert_eq!(reverted.geometry, original.geometry);
    let same = reverted.data().iter().zip(original.data()).filter(|(a, b)| a == b).count();
    let fraction = same as f64 / original.len() as f64;
    assert!(fraction > 0.9, "only {fraction} of voxels agree after there and back");
    // Every structure survives.
    for value in [20, 21, 119] {
        assert!(reverted.data().contains(&value), "label {value} lost");
    }
}

#[test]
fn typical_lumbar_plan_is_reasonable() {
    use spineseg_planning::fingerprint::CaseFingerprint;
    use spineseg_planning::test_support::{case_fingerprint, fingerprint};
    // Sagittal T2 lumbar scans: ~15 slices of 3.3-4.4 mm, 0.6 mm in plane, 512 x 512.
    let cases = (0..20)
        .map(|n| {
            let spacing = [3.3 + 0.06 * n as f64, 0.6, 0.6];
            let labels = vec![0, 20, 21, 22, 23, 24, 26, 120, 121, 122, 123, 124];
            let case = case_fingerprint(&format!("c{n}"), spacing, [15, 448, 512], labels);
            CaseFingerprint { original_orientation: "IPR".into(), ..case }
        })
        .collect();
    let f = fingerprint("lumbar", cases);
    for (name, options) in [("cpu", PlanOptions::default()), ("nnunet", PlanOptions::nnunet())] {
        let plan = plan_from_fingerprint(&f, &options).unwrap();
        for (config, c) in &plan.configurations {
            eprintln!(
                "{name} {config}: spacing {:?} patch {:?} batch {} strides {:?} features {:?}",
                c.spacing_mm, c.patch_size, c.batch_size, c.network.strides, c.network.features_per_stage
            );
            assert!(c.batch_size >= 2);
        }
        let c3 = plan.configuration(ConfigurationName::ThreeDFullres).unwrap();
        assert!(c3.spacing_mm[0] > 3.0 && c3.network.kernel_sizes[0][0] == 1);
    }
}

#[test]
fn labels_not_in_the_plan_are_reported() {
    let g = Geometry::default();
    let case = CaseVolumes {
        id: "x".into(),
        images: vec![Volume::filled([2, 2, 2], 1.0, g)],
        labels: Some(Volume::filled([2, 2, 2], 7, g)),
    };
    let mut plan = tiny_plan([1.0; 3]);
    plan.labels = vec![spineseg_preprocessing::plan::LabelClass { value: 0, name: "background".into() }];
    let err = preprocess_case(&case, &plan, ConfigurationName::ThreeDFullres).unwrap_err().to_string();
    assert!(err.contains("case x") && err.contains("label value 7"), "{err}");
}

fn tiny_plan(spacing: [f64; 3]) -> Plan {
    use spineseg_planning::test_support::{case_fingerprint, fingerprint};
    let f = fingerprint("tiny", vec![case_fingerprint("a", spacing, [8; 3], vec![0, 1, 2])]);
    plan_from_fingerprint(&f, &PlanOptions { overwrite_target_spacing: Some(spacing), ..Default::default() }).unwrap()
}

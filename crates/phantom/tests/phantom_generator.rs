//! The phantom generator: determinism, ranges, label ids, anatomical order, contrast, writing.

use spineseg_anatomy::ontology::{Ontology, StructureId, StructureKind};
use spineseg_phantom::{
    generate_case, plan_case, producible_labels, write_nnunet_dataset, Contrast, PhantomCase, PhantomConfig,
};
use spineseg_io::{Label, Volume};

fn small(contrast: Option<Contrast>) -> PhantomConfig {
    PhantomConfig { contrast, ..PhantomConfig::small() }
}

#[test]
fn same_seed_gives_identical_volumes_and_different_seeds_differ() {
    let config = small(None);
    let a = generate_case(&config, 42, 3).unwrap();
    let b = generate_case(&config, 42, 3).unwrap();
    assert_eq!(a.image.shape(), b.image.shape());
    assert!(a.image.data().iter().zip(b.image.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.image.geometry, b.image.geometry);
    let c = generate_case(&config, 43, 3).unwrap();
    let d = generate_case(&config, 42, 4).unwrap();
    for other in [&c, &d] {
        assert!(other.image.shape() != a.image.shape() || other.image.data() != a.image.data());
    }
}

#[test]
fn planned_levels_and_spacing_stay_in_range_over_many_seeds() {
    for (config, in_plane, max_matrix) in
        [(PhantomConfig::default(), [0.3, 0.9], 512), (PhantomConfig::small(), [1.0, 2.5], 160)]
    {
        for case in 0..200 {
            let plan = plan_case(&config, 7, case).unwrap();
            let n = plan.planned_levels.len();
            assert!((4..=9).contains(&n), "case {case}: {n} levels");
            assert!(plan.planned_levels[0] >= StructureId(16), "top level is T9 or lower");
            let [si, sj, sk] = plan.spacing_mm;
            assert_eq!(si, sj, "square pixels");
            assert!(si >= in_plane[0] - 1e-9 && si <= in_plane[1] + 1e-9, "case {case}: pixel {si} mm");
            assert!((config.slice_spacing_mm[0]..=config.slice_spacing_mm[1]).contains(&sk), "slice {sk} mm");
            assert!(plan.shape[0] <= max_matrix && plan.shape[1] <= max_matrix);
            assert!((config.slices[0]..=config.slices[1]).contains(&plan.shape[2]));
            assert!(plan.tilt_deg.abs() <= config.max_tilt_deg);
        }
    }
}

/// Centroid of a label along the world superior axis (z, mm), or None when absent.
fn centroid_z(labels: &Volume<Label>, id: Label) -> Option<f64> {
    let [ni, nj, nk] = labels.shape();
    let (mut sum, mut n) = (0.0, 0usize);
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                if *labels.get([i, j, k]) == id {
                    sum += labels.geometry.voxel_to_world([i as f64, j as f64, k as f64])[2];
                    n += 1;
                }
            }
        }
    }
    (n > 0).then(|| sum / n as f64)
}

fn lowest_z(labels: &Volume<Label>, id: Label) -> Option<f64> {
    let [ni, nj, nk] = labels.shape();
    let mut lowest: Option<f64> = None;
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                if *labels.get([i, j, k]) == id {
                    let z = labels.geometry.voxel_to_world([i as f64, j as f64, k as f64])[2];
                    lowest = Some(lowest.map_or(z, |l: f64| l.min(z)));
                }
            }
        }
    }
    lowest
}

fn mean_where(case: &PhantomCase, pred: impl Fn(Label) -> bool) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for (v, l) in case.image.data().iter().zip(case.labels.data()) {
        if pred(*l) {
            sum += *v as f64;
            n += 1;
        }
    }
    assert!(n > 0, "no voxels selected");
    sum / n as f64
}

#[test]
fn rendered_cases_have_valid_ids_order_geometry_and_level_counts() {
    let ontology = Ontology::standard();
    let producible = producible_labels();
    for case_index in 0..12 {
        let case = generate_case(&small(None), 11, case_index).unwrap();
        assert_eq!(case.image.shape(), case.labels.shape());
        assert_eq!(case.image.geometry, case.labels.geometry);
        assert_eq!(case.image.geometry.orientation_code(), "IPR");
        let n = case.levels.len();
        assert!((4..=9).contains(&n), "case {case_index}: levels {:?}", case.levels);
        let mut seen = vec![false; Label::MAX as usize + 1];
        for &l in case.labels.data() {
            seen[l as usize] = true;
        }
        for (id, _) in seen.iter().enumerate().filter(|(_, s)| **s).skip_while(|(id, _)| *id == 0) {
            let id = StructureId(id as u16);
            assert!(ontology.get(id).is_some() && producible.contains(&id), "case {case_index}: label {id}");
        }
        assert!(seen[61] && seen[40], "case {case_index}: canal and posterior elements are in view");
        // Vertebrae top to bottom have decreasing z; every disc lies between its neighbours.
        let zs: Vec<f64> = case.levels.iter().map(|l| centroid_z(&case.labels, l.0).unwrap()).collect();
        assert!(zs.windows(2).all(|w| w[0] > w[1]), "case {case_index}: {:?} -> {zs:?}", case.levels);
        for disc in &case.discs {
            let s = ontology.get(*disc).unwrap();
            assert_eq!(s.kind, StructureKind::Disc);
            let z = centroid_z(&case.labels, disc.0).unwrap();
            // The sacrum label covers the whole bone, dorsal wall included, whose centroid may sit
            // as high as the L5/S1 disc's; its lowest point is still below the disc.
            let below = s.below.unwrap();
            let down = if below == spineseg_anatomy::ontology::SACRUM {
                lowest_z(&case.labels, below.0)
            } else {
                centroid_z(&case.labels, below.0)
            };
            if let (Some(up), Some(down)) = (centroid_z(&case.labels, s.above.unwrap().0), down) {
                assert!(up > z && z > down, "case {case_index}: disc {} at {z} not between {up} and {down}", s.name);
            }
        }
    }
}

#[test]
fn csf_is_bright_on_t2_and_dark_on_t1_relative_to_marrow() {
    for seed in [1, 2] {
        let t2 = generate_case(&small(Some(Contrast::T2)), seed, 0).unwrap();
        let t1 = generate_case(&small(Some(Contrast::T1)), seed, 0).unwrap();
        assert_eq!(t1.labels, t2.labels, "the contrast does not change the anatomy");
        let body = |l: Label| (16..=24).contains(&l);
        let canal = |l: Label| l == 61;
        assert!(mean_where(&t2, canal) > 1.3 * mean_where(&t2, body));
        assert!(mean_where(&t1, canal) < 0.7 * mean_where(&t1, body));
        let max = t2.image.data().iter().fold(0f32, |a, b| a.max(*b));
        assert!(max > 500.0 && max < 2000.0, "intensity range: max {max}");
    }
}

#[test]
fn dataset_is_written_in_nnunet_layout_and_not_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Dataset900_Phantom");
    let config = PhantomConfig { max_in_plane_matrix: 64, slices: [4, 6], ..small(Some(Contrast::T2)) };
    let summary = write_nnunet_dataset(&root, &config, 2, 5, false).unwrap();
    assert_eq!(summary.cases.len(), 2);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["numTraining"], 2);
    assert_eq!(json["file_ending"], ".nii.gz");
    assert_eq!(json["channel_names"]["0"], "T2");
    assert_eq!(json["labels"]["background"], 0);
    assert_eq!(json["labels"]["L4/L5"], 123);
    assert_eq!(json["labels"]["sacrum"], 26);
    assert_eq!(json["labels"]["spinal canal"], 61);
    assert_eq!(json["spineseg"]["seed"], 5);
    assert_eq!(json["labels"].as_object().unwrap().len(), producible_labels().len() + 1);
    for id in ["phantom_000", "phantom_001"] {
        assert!(root.join(format!("imagesTr/{id}_0000.nii.gz")).is_file());
        assert!(root.join(format!("labelsTr/{id}.nii.gz")).is_file());
    }
    // The written files read back as the generated case (images rounded to int16).
    let case = generate_case(&config, 5, 1).unwrap();
    let labels = spineseg_io::read_labels(&root.join("labelsTr/phantom_001.nii.gz")).unwrap();
    assert_eq!(labels.data(), case.labels.data());
    assert!(labels.geometry.agrees_with(&case.labels.geometry, case.labels.shape(), 1e-3));
    let image = spineseg_io::read_image(&root.join("imagesTr/phantom_001_0000.nii.gz")).unwrap();
    assert!(image.data().iter().zip(case.image.data()).all(|(a, b)| (a - b).abs() <= 0.5));
    // The project's own nnU-Net adapter opens it and maps every label name onto the ontology.
    let dataset = spineseg_datasets::nnunet::open_nnunet(&root, &Default::default()).unwrap();
    assert_eq!(dataset.cases.len(), 2);
    assert!(dataset.warnings.is_empty(), "{:?}", dataset.warnings);
    // A non-empty folder is refused unless overwriting is asked for.
    assert!(write_nnunet_dataset(&root, &config, 1, 6, false).is_err());
    write_nnunet_dataset(&root, &config, 1, 6, true).unwrap();
    assert!(!root.join("labelsTr/phantom_001.nii.gz").exists());
}

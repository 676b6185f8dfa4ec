//! Helpers shared by the `datasets_*` integration tests: tiny volumes written to temporary folders.
#![allow(dead_code)]

use spineseg_io::{write_volume, AnyVolume, Geometry, Label, Spacing, Volume};
use std::path::{Path, PathBuf};

/// A sagittal-like oblique-free geometry with anisotropic spacing.
pub fn geometry() -> Geometry {
    Geometry::new(
        Spacing::new([0.8, 0.8, 3.0]).unwrap(),
        [-10.0, 4.0, 2.5],
        [[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [-1.0, 0.0, 0.0]],
    )
    .unwrap()
}

pub const SHAPE: [usize; 3] = [6, 5, 4];

/// Writes an image with a simple gradient.
pub fn write_image(path: &Path, shape: [usize; 3], geometry: Geometry) {
    let n: usize = shape.iter().product();
    let v = Volume::new(shape, (0..n).map(|i| i as f32 * 0.5).collect(), geometry).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_volume(path, &AnyVolume::from(v)).unwrap();
}

/// Writes a label volume whose voxels cycle through `values` (each value present at least once
/// when the volume has enough voxels).
pub fn write_labels(path: &Path, shape: [usize; 3], geometry: Geometry, values: &[Label]) {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| values[i % values.len()]).collect();
    let v = Volume::new(shape, data, geometry).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    write_volume(path, &AnyVolume::from(v)).unwrap();
}

/// An nnU-Net raw folder with `cases` training cases of `channels` channels, labels 0..=3 named
/// L3, L4, L4/L5 (plus any extra `labels` JSON entries), and one test case.
pub fn make_nnunet(root: &Path, cases: usize, channels: usize) -> Vec<String> {
    let channel_names: Vec<String> = (0..channels).map(|c| format!("\"{c}\": \"T{}\"", c + 1)).collect();
    let json = format!(
        r#"{{"name": "tiny", "channel_names": {{{}}}, "labels": {{"background": 0, "L3": 1, "L4": 2, "L4/L5": 3}},
            "numTraining": {cases}, "file_ending": ".nii.gz", "spineseg": {{"vertebra_extent": "whole_vertebra"}}}}"#,
        channel_names.join(", ")
    );
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("dataset.json"), json).unwrap();
    let mut ids = Vec::new();
    for i in 0..cases {
        let id = format!("case{i:03}");
        for c in 0..channels {
            write_image(
                &root.join("imagesTr").join(format!("{id}_{c:04}.nii.gz")),
                SHAPE,
                geometry(),
            );
        }
        write_labels(
            &root.join("labelsTr").join(format!("{id}.nii.gz")),
            SHAPE,
            geometry(),
            &[0, 1, 2, 3],
        );
        ids.push(id);
    }
    for c in 0..channels {
        write_image(
            &root.join("imagesTs").join(format!("test000_{c:04}.nii.gz")),
            SHAPE,
            geometry(),
        );
    }
    ids
}

/// Where the shared real data lives: `$SPINESEG_SHARED_DATA`, else `<workspace>/../shared/data`.
pub fn shared_data() -> Option<PathBuf> {
    let dir = match std::env::var_os("SPINESEG_SHARED_DATA") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"),
    };
    dir.is_dir().then_some(dir)
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

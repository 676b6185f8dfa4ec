//! Rows of the bad-input matrix (docs/RELIABILITY.md) that no other test covered: each gives a
//! clear error naming what is wrong, the documented exit code, and writes nothing.

use std::path::Path;

mod support;
use support::{spineseg, tiny_work};

fn fails(args: &[&str], code: i32, needles: &[&str]) {
    let out = spineseg(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{args:?}: expected {needle:?} in: {err}");
    }
}

#[test]
fn training_without_a_checkpoint_or_with_a_missing_fold() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let (w, out) = (work.to_str().unwrap(), dir.path().join("model"));
    let o = out.to_str().unwrap();
    fails(&["train", w, "--out", o, "--resume"], 1, &["no checkpoint to resume from"]);
    fails(&["train", w, "--out", o, "--fold", "7", "--epochs", "1"], 1, &["fold 7 is out of range"]);
    assert!(!out.join("model.json").exists());
}

#[test]
fn prediction_of_an_empty_folder_or_with_a_bad_step() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let m = model.to_str().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    let out = dir.path().join("out");
    fails(
        &["predict", "-i", empty.to_str().unwrap(), "-o", out.to_str().unwrap(), "-m", m],
        1,
        &["no {case}_0000{ext} image files", "empty"],
    );
    assert!(!out.exists());
    // A step of 0 or above 1 is refused before any case is read.
    for step in ["0", "1.5"] {
        fails(
            &["predict", "-i", empty.to_str().unwrap(), "-o", out.to_str().unwrap(), "-m", m, "--step-size", step],
            1,
            &["step"],
        );
    }
}

#[test]
fn an_output_folder_that_is_a_file_is_refused() {
    // (Permissions cannot make a folder unwritable for root, which runs CI; a file standing where
    // the output folder should be is the portable "cannot write there".)
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let p = data.to_str().unwrap();
    assert!(spineseg(&["phantom", "--out", p, "--cases", "1", "--seed", "1", "--small"]).status.success());
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "a file").unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    fails(
        &[
            "predict",
            "-i",
            image.to_str().unwrap(),
            "-o",
            blocker.join("seg.nii.gz").to_str().unwrap(),
            "-m",
            model.to_str().unwrap(),
        ],
        1,
        &["blocker"],
    );
    fails(&["convert", image.to_str().unwrap(), blocker.join("x.mha").to_str().unwrap()], 1, &["blocker"]);
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "a file");
}

/// `path` rewritten with its origin moved by `shift_mm` along the first axis.
fn move_origin(path: &Path, shift_mm: f64) {
    let mut volume = spineseg_io::read_volume(path).unwrap();
    volume.geometry.origin_mm[0] += shift_mm;
    spineseg_io::write_volume(path, &volume).unwrap();
}

/// `path` rewritten without its last slice along the third axis (same origin, spacing, direction).
fn drop_last_slice(path: &Path) {
    let volume = spineseg_io::read_volume(path).unwrap();
    let [nx, ny, nz] = volume.shape;
    let labels = volume.to_labels(path).unwrap();
    let kept = labels.data()[..nx * ny * (nz - 1)].to_vec();
    let cut = spineseg_io::AnyVolume {
        shape: [nx, ny, nz - 1],
        data: spineseg_io::VoxelData::U16(kept),
        geometry: volume.geometry,
    };
    spineseg_io::write_volume(path, &cut).unwrap();
}

#[test]
fn plan_refuses_a_label_off_its_image_grid() {
    for (what, spoil) in [("moved", move_origin as fn(&Path, f64)), ("cut", |p: &Path, _| drop_last_slice(p))] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("phantom");
        let p = data.to_str().unwrap();
        assert!(spineseg(&["phantom", "--out", p, "--cases", "2", "--seed", "1", "--small"]).status.success());
        let label = data.join("labelsTr/phantom_001.nii.gz");
        spoil(&label, 2.0);
        let work = dir.path().join("work");
        fails(
            &["plan", p, "--out", work.to_str().unwrap(), "--configurations", "2d"],
            1,
            &["phantom_001", "labelsTr/phantom_001.nii.gz", "imagesTr/phantom_001_0000.nii.gz", "not on the grid"],
        );
        assert!(!work.join("plans.json").exists(), "{what}: no plan may be written");
    }
}

#[test]
fn overlay_and_report_refuse_labels_off_the_image_grid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let d = data.to_str().unwrap();
    assert!(spineseg(&["phantom", "--out", d, "--cases", "1", "--seed", "1", "--small"]).status.success());
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    let (moved, cut) = (dir.path().join("moved/phantom_000.nii.gz"), dir.path().join("cut/phantom_000.nii.gz"));
    for copy in [&moved, &cut] {
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(data.join("labelsTr/phantom_000.nii.gz"), copy).unwrap();
    }
    move_origin(&moved, 2.0);
    drop_last_slice(&cut);
    let images = data.join("imagesTr");
    for labels in [&moved, &cut] {
        let png = dir.path().join("overlay.png");
        let (i, l) = (image.to_str().unwrap(), labels.to_str().unwrap());
        fails(&["overlay", i, "--labels", l, "-o", png.to_str().unwrap()], 1, &[l, i, "grids differ"]);
        assert!(!png.exists());

        let html = dir.path().join("report.html");
        let pred = labels.parent().unwrap().to_str().unwrap();
        let args = ["report", "--pred", pred, "--images", images.to_str().unwrap(), "-o", html.to_str().unwrap()];
        fails(&args, 1, &[l, i, "grids differ"]);
        assert!(!html.exists());
    }
}

#[test]
fn convert_onto_its_own_input_rewrites_it_whole_or_not_at_all() {
    // `convert IN IN` is a conversion in place (e.g. with --reorient): the read finishes before
    // the write, which goes through a temporary name, so IN is either the new file or untouched.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let d = data.to_str().unwrap();
    assert!(spineseg(&["phantom", "--out", d, "--cases", "1", "--seed", "1", "--small"]).status.success());
    let path = data.join("imagesTr/phantom_000_0000.nii.gz");
    let p = path.to_str().unwrap();
    let before = spineseg_io::read_volume(&path).unwrap();
    assert!(spineseg(&["convert", p, p]).status.success());
    let after = spineseg_io::read_volume(&path).unwrap();
    assert_eq!((after.shape, &after.data), (before.shape, &before.data));

    // A failing conversion (intensities that do not fit int8) leaves IN byte for byte as it was.
    let bytes = std::fs::read(&path).unwrap();
    fails(&["convert", p, p, "--dtype", "int8"], 1, &[p, "does not fit"]);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("phantom_000_0000.nii.gz")]);
}

/// A full disk while training (a file-size limit: writes past it fail with EFBIG): the run
/// stops with exit 1 naming the file that could not be written, and leaves no model folder
/// half-written (no model.json or weights) and no half-written checkpoint under its final name.
#[test]
fn training_on_a_full_disk_stops_naming_the_file_and_writes_no_model() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let out = dir.path().join("model");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    // 16 blocks of 512 bytes: the small JSON files fit, the checkpoint's weights do not.
    let run = support::spineseg_with_file_size_limit(
        16,
        &["train", &p(&work), "--out", &p(&out), "--epochs", "1", "--iterations-per-epoch", "1", "--validation-batches", "1", "--quiet"],
    );
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("File too large") && err.contains(&p(&out)), "the error should name the file: {err}");
    for missing in ["model.json", "weights.bpk", "training/checkpoint_last/state.json", "training/checkpoint_best/state.json"] {
        assert!(!out.join(missing).exists(), "{missing} should not exist after a failed write: {err}");
    }
}

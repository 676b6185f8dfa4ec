//! End-to-end: `spineseg phantom` writes a dataset that `dataset check`, `info` and `overlay`
//! accept, identically for the same seed.

use std::process::Output;

mod support;
use support::spineseg;


fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn phantom_dataset_checks_clean_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        ok(spineseg(&["phantom", "--out", out.to_str().unwrap(), "--cases", "2", "--seed", "3", "--small"]));
    }
    for name in ["imagesTr/phantom_000_0000.nii.gz", "labelsTr/phantom_001.nii.gz", "dataset.json"] {
        assert_eq!(std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap(), "{name} differs");
    }
    let report = ok(spineseg(&["dataset", "check", a.to_str().unwrap()]));
    assert!(report.contains("2 cases") && report.contains("result: OK"), "{report}");

    // Refuses to overwrite without --overwrite.
    let out = spineseg(&["phantom", "--out", a.to_str().unwrap(), "--cases", "1", "--small"]);
    assert_eq!(out.status.code(), Some(1));

    let info = ok(spineseg(&["info", a.join("labelsTr/phantom_000.nii.gz").to_str().unwrap()]));
    assert!(info.contains("spinal canal") && info.contains("IPR"), "{info}");

    let png = dir.path().join("overlay.png");
    ok(spineseg(&[
        "overlay",
        a.join("imagesTr/phantom_000_0000.nii.gz").to_str().unwrap(),
        "--labels",
        a.join("labelsTr/phantom_000.nii.gz").to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

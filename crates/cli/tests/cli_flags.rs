//! Enum-valued flags of every command are clap value enums: a bad value is a usage error (exit
//! 2) that lists the choices, before any file is touched; the old spellings still parse.

mod support;
use support::spineseg;

#[test]
fn enum_flags_of_every_command_refuse_unknown_values_as_usage_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["evaluate", "--pred", "p", "--ref", "r", "--out", "o", "--connectivity", "diagonal"], "face, full"),
        (&["evaluate", "--pred", "p", "--ref", "r", "--out", "o", "--slice-axis", "5"], "0, 1, 2, sagittal, coronal, axial"),
        (&["phantom", "--out", "x", "--contrast", "PD"], "T1, T2"),
        (&["convert", "a.nii", "b.nii", "--dtype", "uint64"], "uint8, int8, uint16, int16, uint32, int32, float32, float64"),
        (&["text", "prompts", "--labels", "x.nii", "--view", "coronal"], "sagittal, axial, volume"),
        (&["model", "precision", "m", "bf16"], "half, single"),
    ];
    for (args, choices) in cases {
        let out = spineseg(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(choices), "{args:?}: {err}");
    }
    // Spellings the string parsers took (case-insensitive names, "transverse", "3d") still parse:
    // the runs then fail on the missing files (exit 1), not on the flags.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    for args in [
        &["evaluate", "--pred", missing, "--ref", missing, "--out", missing, "--slice-axis", "Transverse"][..],
        &["text", "prompts", "--labels", missing, "--view", "3D"][..],
    ] {
        let out = spineseg(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

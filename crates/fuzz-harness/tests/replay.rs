//! Replays every committed fuzz input (the seed corpora in `fuzz/corpus/<target>/` and the crash
//! regressions in `fuzz/regressions/<target>/`) through its reader, as an ordinary test: no
//! panic, and each input read within a second (the fuzzing runs use the same 1 s hang limit).

use spineseg_fuzz_harness::{run, Target};
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn every_corpus_and_regression_input_reads_without_panicking() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for target in Target::ALL {
        for kind in ["corpus", "regressions"] {
            let dir = fuzz.join(kind).join(target.name());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                assert!(kind == "regressions", "{} has no seed corpus", target.name());
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                    continue;
                }
                let data = std::fs::read(&path).unwrap();
                let started = Instant::now();
                // A panic fails the test and names the input (the harness does not catch it).
                run(target, &data);
                assert!(started.elapsed() < Duration::from_secs(1), "{} took {:?}", path.display(), started.elapsed());
                replayed += 1;
            }
        }
    }
    assert!(replayed >= Target::ALL.len(), "{replayed} inputs replayed");
}

#[test]
fn seeds_that_should_read_do_read() {
    // The harness itself: a valid input of each kind is accepted (else the targets would fuzz
    // only the error paths).
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    for (target, name) in [
        (Target::Nifti, "dtype_uint8.nii"),
        (Target::MetaImage, "uchar_identity.mha"),
        (Target::MetaImageDetached, "ushort_raw.mhd"),
        (Target::DatasetJson, "phantom.json"),
        (Target::Annotations, "example.json"),
        (Target::Plan, "lumbar-2d.json"),
        (Target::ModelJson, "lumbar-2d.json"),
        (Target::LabelsJson, "lumbar-2d.json"),
        (Target::PromptEmbeddings, "two-classes.json"),
        (Target::TextConfig, "tiny.json"),
        (Target::Tokenizer, "wordpiece.json"),
        (Target::Safetensors, "tiny.safetensors"),
        (Target::Gradings, "spider.csv"),
        (Target::Gradings, "findings.csv"),
        (Target::FindingsModel, "disc-findings.json"),
        (Target::RoiSet, "two-levels"),
    ] {
        let data = std::fs::read(fuzz.join(target.name()).join(name)).unwrap();
        assert!(run(target, &data), "{}/{name} should read", target.name());
    }
}

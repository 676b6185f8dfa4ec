//! kill -9 anywhere: `spineseg train` killed with SIGKILL at pseudo-random moments (checkpoint
//! writes included, by chance) and resumed until it finishes ends with the same weights as an
//! uninterrupted run; `spineseg predict` killed mid-folder leaves no partial output, and
//! `--continue` finishes only the missing cases. `scripts/kill_resume.sh` does the training part
//! at full scale.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{ok, spineseg, tiny_work, weights};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_spineseg")
}

/// Starts `spineseg args` and SIGKILLs it after `delay`; returns whether it had finished first.
fn run_and_kill(args: &[&str], delay: Duration) -> bool {
    let mut child = Command::new(binary()).args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let started = Instant::now();
    while started.elapsed() < delay {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    false
}

#[test]
fn training_killed_at_random_moments_and_resumed_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work(dir.path());
    let w = work.to_str().unwrap();
    // About 2 s uninterrupted on one core: kills every 0.1-0.7 s land in every part of an epoch.
    let settings =
        ["--epochs", "12", "--iterations-per-epoch", "4", "--validation-batches", "2", "--seed", "5", "--quiet"];
    let reference = dir.path().join("reference");
    let started = Instant::now();
    ok(spineseg(&[&["train", w, "--out", reference.to_str().unwrap()][..], &settings].concat()));
    // On a loaded machine (CI sharing its cores) everything is slower, start-up included, and
    // fixed delays would kill every attempt before it saves a checkpoint: delays are stretched
    // by how much slower than about 2 s the uninterrupted run was.
    let stretch = (started.elapsed().as_secs_f64() / 2.0).max(1.0);

    let killed = dir.path().join("killed");
    let k = killed.to_str().unwrap();
    // A fixed pseudo-random sequence of kill delays (xorshift), so a failure can be replayed.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut kills = 0;
    for _ in 0..80 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_millis(((100 + x % 600) as f64 * stretch) as u64);
        let resume = killed.join("training/checkpoint_last/state.json").is_file()
            || killed.join("training/checkpoint_last.old/state.json").is_file();
        let mut args = vec!["train", w, "--out", k];
        if resume {
            args.push("--resume");
        } else {
            args.extend_from_slice(&settings);
        }
        if run_and_kill(&args, delay) {
            break;
        }
        kills += 1;
    }
    eprintln!("{kills} kills before the run finished");
    assert!(kills >= 2, "the run should have been killed a few times ({kills})");
    assert!(killed.join("model.json").is_file(), "the killed run should finish within 80 attempts");
    assert_eq!(
        weights(&reference, &reference.join("training/checkpoint_last/model.bpk")),
        weights(&killed, &killed.join("training/checkpoint_last/model.bpk")),
        "last weights after {kills} kills"
    );
    assert_eq!(
        weights(&reference, &reference.join("weights.bpk")),
        weights(&killed, &killed.join("weights.bpk")),
        "exported (best) weights after {kills} kills"
    );
}

#[test]
fn prediction_killed_mid_folder_leaves_whole_cases_and_continue_finishes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    ok(spineseg(&["phantom", "--out", data.to_str().unwrap(), "--cases", "4", "--seed", "2", "--small"]));
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let images = data.join("imagesTr");
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    let predict = |out: &Path| {
        vec![
            "predict".to_string(),
            "-i".into(),
            images.to_str().unwrap().into(),
            "-o".into(),
            out.to_str().unwrap().into(),
            "-m".into(),
            model.to_str().unwrap().into(),
        ]
    };
    let args = predict(&full);
    ok(spineseg(&args.iter().map(String::as_str).collect::<Vec<_>>()));

    // Kill as soon as the first case is written (the second is then being predicted).
    let args = predict(&killed);
    let mut child = Command::new(binary()).args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let first = killed.join("phantom_000.nii.gz");
    let started = Instant::now();
    while !first.exists() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Whole cases only: every mask has its sidecars (they are written before it).
    let masks: Vec<String> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".nii.gz") && !n.starts_with('.'))
        .collect();
    assert!(!masks.is_empty() && masks.len() < 4, "killed mid-folder: {masks:?}");
    for mask in &masks {
        let stem = mask.trim_end_matches(".nii.gz");
        assert!(
            killed.join(format!("{stem}.labels.json")).is_file()
                && killed.join(format!("{stem}.levels.json")).is_file()
        );
    }

    let mut args = predict(&killed);
    args.push("--continue".into());
    let out = spineseg(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains(&format!("--continue: {} case(s) already written, {} to predict", masks.len(), 4 - masks.len())),
        "{log}"
    );
    // The same files as the uninterrupted run, nothing else (no temporaries left).
    let list = |d: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    assert_eq!(list(&killed), list(&full));
    for name in list(&full) {
        let (a, b) = (std::fs::read(full.join(&name)).unwrap(), std::fs::read(killed.join(&name)).unwrap());
        if name.ends_with(".nii.gz") {
            let (a, b) = (
                spineseg_io::read_labels(&full.join(&name)).unwrap(),
                spineseg_io::read_labels(&killed.join(&name)).unwrap(),
            );
            assert_eq!(a.data(), b.data(), "{name}");
        } else if name != "structures.csv" {
            assert_eq!(a, b, "{name}");
        }
    }
    // The structure table covers every case, the continued ones read back.
    let table = std::fs::read_to_string(killed.join("structures.csv")).unwrap();
    assert_eq!(table, std::fs::read_to_string(full.join("structures.csv")).unwrap());
}

//! Helpers shared by the CLI test binaries (`mod support;`).
// Each test binary compiles this module and uses only some of it.
#![allow(dead_code)]

use spineseg_io::Label;
use spineseg_preprocessing::plan::Plan;
use spineseg_preprocessing::test_support::shrink_2d_network;
use spineseg_train::checkpoint::{load_network, parameter_values};
use spineseg_train::load_manifest;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `spineseg` binary with `args`. When cargo runs the tests through a runner
/// (`CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER`, e.g. `qemu-x86_64 -cpu Haswell` from
/// `scripts/test_simd_paths.sh`), the binary runs through the same runner, so the whole test,
/// not only the test process, sees the CPU the runner presents.
pub fn spineseg(args: &[&str]) -> Output {
    let binary = env!("CARGO_BIN_EXE_spineseg");
    let runner = std::env::var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER").unwrap_or_default();
    let mut runner = runner.split_whitespace();
    let mut command = match runner.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(runner).arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command.args(args).output().expect("spineseg should start")
}

/// The most frequent non-zero label of a prediction: the structure a `--structures` check asks
/// for, so the check works whatever an untrained or briefly trained model predicts.
pub fn most_frequent_structure(labels: &[Label]) -> Label {
    let mut counts = std::collections::BTreeMap::<Label, usize>::new();
    for &v in labels.iter().filter(|&&v| v != 0) {
        *counts.entry(v).or_default() += 1;
    }
    let (&label, _) = counts.iter().max_by_key(|(_, &n)| n).expect("the model predicts some structure");
    label
}

/// `kept` is the full prediction `all` with every label but `label` set to background.
pub fn assert_only_structure_kept(all: &[Label], kept: &[Label], label: Label) {
    assert_eq!(all.len(), kept.len(), "both predictions cover the same grid");
    for (a, k) in all.iter().zip(kept) {
        assert_eq!(*k, if *a == label { label } else { 0 });
    }
}

/// `out`'s stdout, after asserting that the command succeeded (its output is the message if not).
pub fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 3-case small phantom planned for 2D, the plan edited to a 32x32 patch, batch 2 and a
/// 3-stage network 4-8-16.
pub fn tiny_work(dir: &Path) -> PathBuf {
    let data = dir.join("phantom");
    let work = dir.join("work");
    ok(spineseg(&["phantom", "--small", "--cases", "3", "--seed", "1", "--out", data.to_str().unwrap()]));
    tiny_plan(&data, &work);
    work
}

/// Plans `data` for 2D into `work`, the plan edited to a 32x32 patch, batch 2 and a 3-stage
/// network 4-8-16.
pub fn tiny_plan(data: &Path, work: &Path) {
    ok(spineseg(&["plan", data.to_str().unwrap(), "--out", work.to_str().unwrap(), "--configurations", "2d"]));
    let path = work.join("plans.json");
    let mut plan = Plan::load(&path).unwrap();
    shrink_2d_network(&mut plan);
    plan.save(&path).unwrap();
}

/// Trains `work` into `out` for 2 epochs of 2 iterations, seed 5, with `extra` flags.
pub fn train(work: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "train",
        work.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--epochs",
        "2",
        "--iterations-per-epoch",
        "2",
        "--validation-batches",
        "2",
        "--seed",
        "5",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    ok(spineseg(&args))
}

/// The parameter values of the network in `file`, built as `model_dir`'s model.json says.
pub fn weights(model_dir: &Path, file: &Path) -> Vec<Vec<f32>> {
    let manifest = load_manifest(&model_dir.join("model.json")).unwrap();
    let unet = manifest.network.plain_conv_unet().expect("the trainer trains a plain U-Net");
    parameter_values(&load_network(unet, file).unwrap())
}

/// Six phantom patients as `{patient}_t2.nii.gz` (and the same masks under `labels/`), plus a
/// gradings.csv with findings that vary by patient and level.
pub fn graded_phantoms(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let data = dir.join("phantom");
    let out = spineseg(&["phantom", "--out", data.to_str().unwrap(), "--cases", "6", "--seed", "5", "--small"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let images = dir.join("images");
    let labels = dir.join("labels");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let mut gradings = String::from("patient,ivd_label,level,modic,upper_endplate_change,lower_endplate_change,spondylolisthesis,disc_herniation,disc_narrowing,disc_bulging,pfirrmann_grade,level_note\n");
    for p in 0..6 {
        let patient = format!("{}", 10 + p);
        std::fs::copy(
            data.join(format!("imagesTr/phantom_{p:03}_0000.nii.gz")),
            images.join(format!("{patient}_t2.nii.gz")),
        )
        .unwrap();
        std::fs::copy(
            data.join(format!("labelsTr/phantom_{p:03}.nii.gz")),
            labels.join(format!("{patient}_t2.nii.gz")),
        )
        .unwrap();
        for (n, level) in ["L5S1", "L4L5", "L3L4", "L2L3", "L1L2"].iter().enumerate() {
            let on = |k: usize| usize::from((p + n + k).is_multiple_of(3));
            gradings.push_str(&format!(
                "{patient},{},{level},{},0,0,{},{},{},{},{},\n",
                n + 1,
                2 * on(0),
                on(1),
                on(2),
                on(0),
                on(1),
                1 + (p + n) % 5
            ));
        }
    }
    let gradings_path = dir.join("gradings.csv");
    std::fs::write(&gradings_path, gradings).unwrap();
    (images, labels, gradings_path)
}

/// Runs `spineseg args` with its file-size limit at `blocks` x 512 bytes and SIGXFSZ ignored, so a
/// write past the limit fails with EFBIG ("File too large"), as on a full disk, instead of
/// killing the process.
pub fn spineseg_with_file_size_limit(blocks: u32, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f {blocks} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_spineseg"))
        .args(args)
        .output()
        .expect("sh should start")
}

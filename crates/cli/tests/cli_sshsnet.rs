//! End-to-end on phantoms: SSHSNet's two stages. Stage 1 is `train --cps` on the 2d
//! configuration with an unlabelled folder (its model folder carries both networks); stage 2 is
//! `train --configuration 3d_fullres --stage1 S1` (the 3D U-Net with the frozen 2D networks
//! inside, cross tri-attention or concatenation); its model folder is the cascade, which
//! `predict` runs end to end (sliding windows and mirroring as for any model). Both stages
//! resume bit-identically. The 3D patch is smaller in plane than the 2D one, so stage 2 trains
//! with stage-1 context and predicts with stage 1 on whole slices.

use spineseg_model::NetworkConfig;
use spineseg_preprocessing::plan::{ConfigurationName, Plan};
use spineseg_preprocessing::test_support::shrink_2d_network;
use spineseg_train::checkpoint::{load_network_of_kind, parameter_values};
use spineseg_train::{load_manifest, training_record};
use std::path::{Path, PathBuf};

mod support;
use support::{ok, spineseg, train};

/// Three phantoms planned for 2d and 3d_fullres, both shrunk to tiny 3-stage networks (the 3D
/// one with a first stage that does not convolve along the thick axis).
fn tiny_work_2d_3d(dir: &Path) -> PathBuf {
    let data = dir.join("phantom");
    let work = dir.join("work");
    ok(spineseg(&["phantom", "--small", "--cases", "3", "--seed", "1", "--out", data.to_str().unwrap()]));
    ok(spineseg(&[
        "plan",
        data.to_str().unwrap(),
        "--out",
        work.to_str().unwrap(),
        "--configurations",
        "2d,3d_fullres",
    ]));
    let path = work.join("plans.json");
    let mut plan = Plan::load(&path).unwrap();
    shrink_2d_network(&mut plan);
    let c = plan.configurations.get_mut(&ConfigurationName::ThreeDFullres).unwrap();
    // Smaller in plane than the 2D patch (32 x 32): stage 2 trains with stage-1 context.
    c.patch_size = vec![4, 16, 16];
    c.batch_size = 2;
    let n = &mut c.network;
    n.n_stages = 3;
    n.features_per_stage = vec![4, 8, 16];
    n.kernel_sizes = vec![vec![1, 3, 3], vec![3, 3, 3], vec![3, 3, 3]];
    n.strides = vec![vec![1, 1, 1], vec![1, 2, 2], vec![2, 2, 2]];
    n.n_conv_per_stage_encoder = vec![2; 3];
    n.n_conv_per_stage_decoder = vec![2; 2];
    plan.save(&path).unwrap();
    work
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn stage1_cps_then_stage2_hybrid_resume_exactly_and_the_cascade_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work_2d_3d(dir.path());
    let images = dir.path().join("phantom/imagesTr");
    let p = |path: &Path| path.to_str().unwrap().to_string();

    // Stage 1: CPS; the model folder carries the second network too.
    let stage1 = dir.path().join("stage1");
    train(&work, &stage1, &["--cps", "--images", &p(&images)]);
    assert!(stage1.join("second_weights.bpk").is_file());
    assert_ne!(bytes(&stage1.join("weights.bpk")), bytes(&stage1.join("second_weights.bpk")));

    // Stage 2 on the 2d configuration is refused, naming the configuration it needs.
    let refused = spineseg(&[
        "train",
        &p(&work),
        "--out",
        &p(&dir.path().join("wrong")),
        "--stage1",
        &p(&stage1),
        "--epochs",
        "1",
        "--quiet",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("3d_fullres"), "{stderr}");

    // Stage 2 with cross tri-attention: the model folder is the cascade.
    let stage2 = dir.path().join("stage2");
    let stage2_args = ["--configuration", "3d_fullres", "--stage1", &p(&stage1)];
    let report = train(&work, &stage2, &stage2_args);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let manifest = load_manifest(&stage2.join("model.json")).unwrap();
    assert_eq!(manifest.network.kind(), "sshsnet_hybrid");
    assert_eq!(training_record(&manifest).unwrap().method, "sshsnet_stage2");
    let NetworkConfig::SshsHybrid(hybrid) = &manifest.network else { unreachable!("the kind was checked") };
    assert_eq!(hybrid.context_margin, Some(vec![8, 8]), "stage 1 sees its own 32 x 32 patch around the 16 x 16 one");

    // Stopped after one epoch and resumed: bit-identical.
    let resumed = dir.path().join("stage2_resumed");
    train(&work, &resumed, &[&stage2_args[..], &["--stop-after-epochs", "1"]].concat());
    let report = ok(spineseg(&["train", &p(&work), "--out", &p(&resumed), "--resume", "--quiet"]));
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let last = |m: &Path| {
        let network = load_network_of_kind(&manifest.network, &m.join("training/checkpoint_last/model.bpk")).unwrap();
        parameter_values(&network)
    };
    assert!(last(&stage2) == last(&resumed), "stage-2 weights differ after resuming");

    // The concatenation arm.
    let concat = dir.path().join("stage2_concat");
    train(&work, &concat, &[&stage2_args[..], &["--no-tri-attention"]].concat());
    let manifest = load_manifest(&concat.join("model.json")).unwrap();
    assert_eq!(training_record(&manifest).unwrap().method, "sshsnet_stage2_concat");
    assert_ne!(bytes(&concat.join("weights.bpk")).len(), bytes(&stage2.join("weights.bpk")).len());

    // With stage 1's prior: named in the record and the network config.
    let prior = dir.path().join("stage2_prior");
    train(&work, &prior, &[&stage2_args[..], &["--stage1-prior"]].concat());
    let manifest = load_manifest(&prior.join("model.json")).unwrap();
    assert_eq!(training_record(&manifest).unwrap().method, "sshsnet_stage2_prior");
    let NetworkConfig::SshsHybrid(hybrid) = &manifest.network else { unreachable!("a stage-2 model") };
    assert!(hybrid.uses_stage1_prior());

    // The cascade predicts whole volumes, with and without mirroring.
    for (name, extra) in [("pred", vec![]), ("pred_no_tta", vec!["--disable-tta"])] {
        let pred = dir.path().join(name);
        let (images, pred_dir, model) = (p(&images), p(&pred), p(&stage2));
        let args = [&["predict", "-i", &images, "-o", &pred_dir, "-m", &model][..], &extra[..]].concat();
        ok(spineseg(&args));
        assert!(pred.join("phantom_000.nii.gz").is_file(), "{name}");
    }
}

/// 2.5D stage 1 (`--slice-context 1`, the authors' three adjacent slices): CPS trains on three
/// channels, the model folder records it, a resumed run is bit-identical, `predict` stacks the
/// slices itself; a 3D run cannot take it, and stage 2 refuses such a stage 1 (it runs stage 1
/// on single slices).
#[test]
fn stage1_with_neighbouring_slices_trains_resumes_and_predicts() {
    let dir = tempfile::tempdir().unwrap();
    let work = tiny_work_2d_3d(dir.path());
    let images = dir.path().join("phantom/imagesTr");
    let p = |path: &Path| path.to_str().unwrap().to_string();
    let stage1_args = ["--cps", "--images", &p(&images), "--slice-context", "1"];

    let stage1 = dir.path().join("stage1_25d");
    let report = train(&work, &stage1, &stage1_args);
    assert!(report.contains("finished: 2 of 2 epochs"), "{report}");
    let manifest = load_manifest(&stage1.join("model.json")).unwrap();
    assert_eq!(manifest.slice_context, 1);
    assert_eq!(manifest.network.in_channels(), 3, "one image channel x three slices");
    let json = std::fs::read_to_string(stage1.join("model.json")).unwrap();
    assert!(json.contains("\"slice_context\": 1"), "{json}");

    let resumed = dir.path().join("stage1_25d_resumed");
    train(&work, &resumed, &[&stage1_args[..], &["--stop-after-epochs", "1"]].concat());
    ok(spineseg(&["train", &p(&work), "--out", &p(&resumed), "--resume", "--quiet"]));
    let last = |m: &Path| {
        let network = load_network_of_kind(&manifest.network, &m.join("training/checkpoint_last/model.bpk")).unwrap();
        parameter_values(&network)
    };
    assert!(last(&stage1) == last(&resumed), "2.5D weights differ after resuming");

    let pred = dir.path().join("pred_25d");
    ok(spineseg(&["predict", "-i", &p(&images), "-o", &p(&pred), "-m", &p(&stage1)]));
    assert!(pred.join("phantom_000.nii.gz").is_file());

    let refused = |extra: &[&str], out: &str| {
        let base = ["train", &p(&work), "--out", &p(&dir.path().join(out)), "--epochs", "1", "--quiet"];
        let output = spineseg(&[&base[..], extra].concat());
        assert_eq!(output.status.code(), Some(1), "{extra:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let stderr = refused(&["--configuration", "3d_fullres", "--slice-context", "1"], "x3d");
    assert!(stderr.contains("needs the 2d configuration"), "{stderr}");
    let stderr = refused(&["--configuration", "3d_fullres", "--stage1", &p(&stage1)], "stage2");
    assert!(stderr.contains("slice_context"), "{stderr}");
}

//! End-to-end: `spineseg text embed` with a tiny random BERT folder written by
//! `spineseg_text::write_tiny_test_encoder` (no download).

use std::path::Path;

mod support;
use support::spineseg;


fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn embed_prints_one_unit_vector_per_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = dir.path().join("tiny encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    let out = spineseg(&["text", "embed", "--text-encoder", s(&encoder), "L4 vertebral body", "sacrum", "L4 vertebral body"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let items = json.as_array().unwrap();
    assert_eq!(items.len(), 3);
    // One object per line, between the brackets.
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    for (item, prompt) in items.iter().zip(["L4 vertebral body", "sacrum", "L4 vertebral body"]) {
        assert_eq!(item["text"], prompt);
        assert_eq!(item["dim"], 32);
        let v: Vec<f64> = item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), 32);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // The same text in another row of the batch: equal up to rounding, not bit for bit, since
    // flex's SIMD reductions may split a row differently by its memory alignment, and how they
    // split depends on the CPU's vector width.
    let vector = |item: &serde_json::Value| -> Vec<f64> { item["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let largest_diff = vector(&items[0]).iter().zip(vector(&items[2])).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(largest_diff < 1e-6, "the same text embeds differently by {largest_diff}");
    assert_ne!(items[0]["embedding"], items[1]["embedding"]);
}

#[test]
fn embed_errors_name_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-encoder");
    let out = spineseg(&["text", "embed", "--text-encoder", s(&missing), "sacrum"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no-such-encoder") && err.contains("fetch_text_encoder.sh"), "{err}");

    // A folder without weights: the error names the folder and the missing file.
    let broken = dir.path().join("broken");
    spineseg_text::write_tiny_test_encoder(&broken).unwrap();
    std::fs::remove_file(broken.join("model.safetensors")).unwrap();
    let out = spineseg(&["text", "embed", "--text-encoder", s(&broken), "sacrum"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("loading the text encoder from") && err.contains("model.safetensors"), "{err}");
}

#[test]
fn embed_usage() {
    let help = spineseg(&["text", "embed", "--help"]);
    assert!(help.status.success());
    assert!(text(&help.stdout).contains("--text-encoder"));
    // No prompt is a usage error.
    assert_eq!(spineseg(&["text", "embed", "--text-encoder", "x"]).status.code(), Some(2));
}

fn prompts(args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["text", "prompts"];
    all.extend_from_slice(args);
    let out = spineseg(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str::<serde_json::Value>(&text(&out.stdout)).unwrap().as_array().unwrap().clone()
}

#[test]
fn prompts_for_classes_and_for_an_annotated_case() {
    // Class prompts: the lumbar spine by default, or the named structures through synonyms.
    let classes = prompts(&[]);
    let names: Vec<&str> = classes.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"L4") && names.contains(&"L5/S1") && names.contains(&"sacrum"), "{names:?}");
    let disc = prompts(&["--structures", "L4-L5 disc"]);
    assert_eq!(disc.len(), 1);
    assert_eq!(disc[0]["id"], 123);
    assert!(disc[0]["prompt"].as_str().unwrap().contains("between the L4 vertebral body above"), "{}", disc[0]);
    let out = spineseg(&["text", "prompts", "--structures", "L4 vertebrea"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown structure"), "{}", text(&out.stderr));

    // A phantom's labels (ontology ids): the mid-sagittal slice shows lumbar bodies and discs.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let made = spineseg(&["phantom", "--small", "--cases", "1", "--seed", "3", "--out", s(&data)]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let labels = data.join("labelsTr/phantom_000.nii.gz");
    let seen = prompts(&["--labels", s(&labels), "--view", "sagittal"]);
    assert!(seen.len() >= 4, "{seen:?}");
    for p in &seen {
        let prompt = p["prompt"].as_str().unwrap();
        assert!(prompt.starts_with("sagittal MRI slice: the "), "{prompt}");
        assert!(prompt.contains("visible"), "{prompt}");
    }
    let out = spineseg(&["text", "prompts", "--labels", s(&labels), "--view", "axial", "--slice", "100000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("outside"), "{}", text(&out.stderr));
}

#[test]
fn cache_embeds_a_model_folders_class_prompts() {
    let dir = tempfile::tempdir().unwrap();
    let encoder = dir.path().join("encoder");
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    // The shipped model's plan lists its structures; the cache needs nothing else.
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d/plans.json");
    std::fs::copy(&shipped, model.join("plans.json")).unwrap();
    let out = spineseg(&["text", "cache", "-m", s(&model), "--text-encoder", s(&encoder)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("prompt_embeddings.json")).unwrap()).unwrap();
    let classes = json["classes"].as_array().unwrap();
    let plan: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    assert_eq!(classes.len(), plan["labels"].as_array().unwrap().len());
    assert!(classes[0]["prompt"].as_str().unwrap().starts_with("background"));
    let dim = json["dim"].as_u64().unwrap() as usize;
    for c in classes {
        let v: Vec<f64> = c["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(v.len(), dim);
        assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4, "unit vectors");
    }
    // The L4 class carries the L4 prompt.
    let l4 = classes.iter().find(|c| c["structure_id"] == 23).unwrap();
    assert!(l4["prompt"].as_str().unwrap().starts_with("L4 vertebral body:"), "{l4}");
    // No encoder: a clear error, nothing written.
    std::fs::remove_file(model.join("prompt_embeddings.json")).unwrap();
    let out = spineseg(&["text", "cache", "-m", s(&model), "--text-encoder", s(&dir.path().join("none"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    assert!(!model.join("prompt_embeddings.json").exists());
}

//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/` from files in this
//! repository (the I/O fixtures written by nibabel and SimpleITK, the shipped model folder) and
//! generated ones (a phantom dataset.json, the tiny test text encoder). Run from the repository
//! root: `cargo run -p spineseg-fuzz-harness --example seed_corpora`. Every seed is small (libFuzzer
//! mutates inputs up to a few kB best), and the replay test runs them all.

use spineseg_fuzz_harness::{run, Target};
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let corpus = root.join("fuzz/corpus");
    let put = |target: Target, name: &str, data: &[u8]| {
        let dir = corpus.join(target.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
        // A seed the reader rejects is still useful, but say so.
        if !run(target, data) {
            eprintln!("note: {}/{name} is rejected by its reader", target.name());
        }
    };
    let read = |rel: &str| std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));

    for name in
        ["scaled_uint8.nii.gz", "dtype_int8.nii.gz", "lpi_qform_only.nii.gz", "dtype_uint8.nii", "negdet_sform.nii.gz"]
    {
        put(Target::Nifti, name, &read(&format!("crates/io/tests/fixtures/nifti/{name}")));
    }
    for name in [
        "uchar_identity.mha",
        "char_oblique_compressed.mha",
        "short_sagittal_compressed.mha",
        "float_bigendian_compressed.mha",
    ] {
        put(Target::MetaImage, name, &read(&format!("crates/io/tests/fixtures/metaimage/{name}")));
    }
    for (header, data, ext) in [
        ("ushort_raw.mhd", "ushort_raw.raw", "raw"),
        ("uchar_headersize_end.mhd", "uchar_headersize_end.raw", "raw"),
        ("short_oblique_aniso_zraw.mhd", "short_oblique_aniso_zraw.zraw", "zraw"),
    ] {
        let text = String::from_utf8(read(&format!("crates/io/tests/fixtures/metaimage/{header}"))).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("ElementDataFile") {
                    format!("ElementDataFile = data.{ext}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let mut input = text.into_bytes();
        input.push(0);
        input.extend(read(&format!("crates/io/tests/fixtures/metaimage/{data}")));
        put(Target::MetaImageDetached, header, &input);
    }
    put(
        Target::DatasetJson,
        "phantom.json",
        br#"{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "L1": 20, "L2": 21, "L1/L2": 120, "spinal canal": 61}, "numTraining": 0, "file_ending": ".nii.gz"}"#,
    );
    put(
        Target::DatasetJson,
        "regions.json",
        br#"{"channel_names": {"0": "T2"}, "labels": {"background": 0, "vertebrae": [1, 2], "L5": 2}, "numTraining": 0, "file_ending": ".mha", "spineseg": {"vertebra_extent": "body"}}"#,
    );
    put(
        Target::Annotations,
        "example.json",
        br#"{"default": ["vertebrae", "discs"], "cases": {"case_007": ["T12/L1", "L1/L2", "L5/S1"], "case_008": ["spinal canal"]}}"#,
    );
    put(Target::Plan, "lumbar-2d.json", &read("models/lumbar-2d/plans.json"));
    put(Target::ModelJson, "lumbar-2d.json", &read("models/lumbar-2d/model.json"));
    put(Target::LabelsJson, "lumbar-2d.json", &read("models/lumbar-2d/labels.json"));
    // The shipped embeddings are 177 kB: keep the first two classes, 8 dimensions.
    let mut embeddings: serde_json::Value =
        serde_json::from_slice(&read("models/lumbar-2d/prompt_embeddings.json")).unwrap();
    let classes = embeddings["classes"].as_array_mut().unwrap();
    classes.truncate(2);
    for class in classes.iter_mut() {
        class["embedding"].as_array_mut().unwrap().truncate(8);
    }
    embeddings["dim"] = 8.into();
    put(Target::PromptEmbeddings, "two-classes.json", serde_json::to_string(&embeddings).unwrap().as_bytes());

    let encoder = std::env::temp_dir().join(format!("spineseg-seed-encoder-{}", std::process::id()));
    spineseg_text::write_tiny_test_encoder(&encoder).unwrap();
    put(Target::TextConfig, "tiny.json", &std::fs::read(encoder.join("config.json")).unwrap());
    put(
        Target::Tokenizer,
        "wordpiece.json",
        br###"{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true}, "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}], "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}}, "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true}, "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "l4": 4, "disc": 5, "##5": 6}}}"###,
    );
    put(Target::Safetensors, "tiny.safetensors", &std::fs::read(encoder.join("model.safetensors")).unwrap());
    std::fs::remove_dir_all(&encoder).unwrap();
    eprintln!("seed corpora written to {}", corpus.display());
    put(
        Target::Gradings,
        "spider.csv",
        b"patient,ivd_label,level,modic,upper_endplate_change,lower_endplate_change,spondylolisthesis,disc_herniation,disc_narrowing,disc_bulging,pfirrmann_grade,level_note\n1,1,L5S1,0,0,0,0,0,1,1,3,\n1,2,L4L5,2,1,0,0,1,0,1,4,\n2,0,,0,0,0,0,0,0,0,2,transitional\n",
    );
    put(
        Target::Gradings,
        "findings.csv",
        b"case,level,found,p_disc_herniation,p_disc_narrowing,p_disc_bulging,p_spondylolisthesis,p_modic_change,disc_herniation,disc_narrowing,disc_bulging,spondylolisthesis,modic_change,pfirrmann_grade,p_pfirrmann_1,p_pfirrmann_2,p_pfirrmann_3,p_pfirrmann_4,p_pfirrmann_5\n13,L5/S1,1,0.3,0.6,0.5,0.2,0.5,0,1,1,0,1,3,0.1,0.2,0.4,0.2,0.1\n13,T9/T10,0,,,,,,,,,,,,,,,,\n",
    );
    // The shipped manifest without its prompts (kept small: libFuzzer mutates a few kB best).
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&read("models/disc-findings/findings_model.json")).unwrap();
    manifest.as_object_mut().unwrap().remove("prompts");
    put(Target::FindingsModel, "disc-findings.json", serde_json::to_string(&manifest).unwrap().as_bytes());
    let mut roi_set = br#"{"roi": {"width_mm": 10.0, "height_mm": 5.0, "width_px": 4, "height_px": 2}, "segmentation_model": "models/lumbar-2d", "entries": [{"patient": "7", "sequence": "t2", "image": "7_t2.nii.gz", "level": 123, "block": 0, "angle_deg": 3.0, "coverage": 1.0}, {"patient": "7", "sequence": "t2", "image": "7_t2.nii.gz", "level": 122, "missing": "not found by the segmentation"}]}"#.to_vec();
    roi_set.push(0);
    roi_set.extend((0..8).flat_map(|i| (i as f32 * 0.5).to_le_bytes()));
    put(Target::RoiSet, "two-levels", &roi_set);
}

//! The readers of outside data, as fuzz targets: each [`Target`] writes the input where its
//! reader expects a file (a per-thread scratch folder) and reads it with the public loader the
//! CLI uses. Errors are expected and ignored; a panic, an abort, a hang or a huge allocation is a
//! bug. The libFuzzer targets in `fuzz/` call [`run`]; `tests/replay.rs` replays the committed
//! corpora and crash regressions (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through
//! the same function on every `cargo test`, so CI needs no fuzzer.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// Every reader of outside data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `.nii`, or `.nii.gz` when the input starts with the gzip magic.
    Nifti,
    /// `.mha` (header and data in one file).
    MetaImage,
    /// `.mhd` header plus a data file: the input is the header, a NUL byte, then the data,
    /// written as both `data.raw` and `data.zraw` (what the fixtures' headers name).
    MetaImageDetached,
    /// An nnU-Net raw dataset's `dataset.json` (and its label table), opened as a dataset.
    DatasetJson,
    /// A dataset's `annotations.json` (declared annotations per case).
    Annotations,
    /// `plans.json`.
    Plan,
    /// A model folder's `model.json`.
    ModelJson,
    /// A model folder's / `predict`'s `labels.json`.
    LabelsJson,
    /// A model folder's `prompt_embeddings.json`.
    PromptEmbeddings,
    /// A text encoder's `config.json`.
    TextConfig,
    /// A text encoder's `tokenizer.json`.
    Tokenizer,
    /// A text encoder's `model.safetensors` (with the tiny test encoder's config).
    Safetensors,
    /// A gradings table: SPIDER's `gradings.csv` or a findings CSV (`evaluate-findings --ref`).
    Gradings,
    /// A findings model folder's `findings_model.json`.
    FindingsModel,
    /// An ROI set (`findings rois`): `rois.json`, a NUL byte, then the `rois.f32` pixels.
    RoiSet,
}

impl Target {
    /// Every target, in the order of `fuzz/fuzz_targets/`.
    pub const ALL: [Target; 15] = [
        Target::Nifti,
        Target::MetaImage,
        Target::MetaImageDetached,
        Target::DatasetJson,
        Target::Annotations,
        Target::Plan,
        Target::ModelJson,
        Target::LabelsJson,
        Target::PromptEmbeddings,
        Target::TextConfig,
        Target::Tokenizer,
        Target::Safetensors,
        Target::Gradings,
        Target::FindingsModel,
        Target::RoiSet,
    ];

    /// The target's name: its fuzz target and corpus folder.
    pub fn name(self) -> &'static str {
        match self {
            Target::Nifti => "nifti",
            Target::MetaImage => "metaimage",
            Target::MetaImageDetached => "metaimage_detached",
            Target::DatasetJson => "dataset_json",
            Target::Annotations => "annotations",
            Target::Plan => "plan",
            Target::ModelJson => "model_json",
            Target::LabelsJson => "labels_json",
            Target::PromptEmbeddings => "prompt_embeddings",
            Target::TextConfig => "text_config",
            Target::Tokenizer => "tokenizer",
            Target::Safetensors => "safetensors",
            Target::Gradings => "gradings",
            Target::FindingsModel => "findings_model",
            Target::RoiSet => "roi_set",
        }
    }
}

thread_local! {
    /// One scratch folder per thread (libFuzzer runs one input at a time per process; the replay
    /// test runs targets in parallel threads).
    static SCRATCH: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

fn scratch() -> PathBuf {
    SCRATCH.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| {
                // Memory-backed where the system has it: each input is one small file write.
                let shm = Path::new("/dev/shm");
                let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
                let dir = base.join(format!("spineseg-fuzz-{}-{:?}", std::process::id(), std::thread::current().id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("the scratch folder should be creatable");
                dir
            })
            .clone()
    })
}

fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("the scratch folder should be writable");
    }
    std::fs::write(path, data).expect("the scratch folder should be writable");
}

/// Runs `target`'s reader on `data`; returns whether it accepted the input.
pub fn run(target: Target, data: &[u8]) -> bool {
    let dir = scratch();
    match target {
        Target::Nifti => {
            let name = if data.starts_with(&[0x1f, 0x8b]) { "x.nii.gz" } else { "x.nii" };
            let path = dir.join(name);
            write(&path, data);
            spineseg_io::read_volume(&path).is_ok()
        }
        Target::MetaImage => {
            let path = dir.join("x.mha");
            write(&path, data);
            spineseg_io::read_volume(&path).is_ok()
        }
        Target::MetaImageDetached => {
            let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            let (header, rest) = data.split_at(split);
            let payload = rest.get(1..).unwrap_or(&[]);
            let path = dir.join("x.mhd");
            write(&path, header);
            write(&dir.join("data.raw"), payload);
            write(&dir.join("data.zraw"), payload);
            spineseg_io::read_volume(&path).is_ok()
        }
        Target::DatasetJson => {
            let root = dir.join("dataset");
            for sub in ["imagesTr", "labelsTr"] {
                std::fs::create_dir_all(root.join(sub)).expect("the scratch folder should be writable");
            }
            write(&root.join("dataset.json"), data);
            spineseg_datasets::nnunet::open_nnunet(&root, &Default::default()).is_ok()
        }
        Target::Annotations => {
            let root = dir.join("annotated");
            write(&root.join("annotations.json"), data);
            spineseg_datasets::annotations::DeclaredAnnotations::at(&root).is_ok()
        }
        Target::Plan => {
            let path = dir.join("plans.json");
            write(&path, data);
            spineseg_preprocessing::plan::Plan::load(&path).is_ok()
        }
        Target::ModelJson => {
            let path = dir.join("model.json");
            write(&path, data);
            spineseg_infer::ModelManifest::load(&path).is_ok()
        }
        Target::LabelsJson => {
            let path = dir.join("labels.json");
            write(&path, data);
            spineseg_infer::OutputLabels::load(&path).is_ok()
        }
        Target::PromptEmbeddings => {
            let path = dir.join("prompt_embeddings.json");
            write(&path, data);
            spineseg_infer::model_folder::PromptEmbeddings::load(&path).is_ok()
        }
        Target::TextConfig => {
            let path = dir.join("config.json");
            write(&path, data);
            spineseg_text::BertConfig::load(&path).is_ok()
        }
        Target::Tokenizer => {
            let encoder = dir.join("tokenizer");
            write(&encoder.join("tokenizer.json"), data);
            spineseg_text::TextTokenizer::load(&encoder, 32).is_ok()
        }
        Target::Safetensors => {
            let encoder = dir.join("encoder");
            if !encoder.join("config.json").is_file() {
                spineseg_text::test_support::write_tiny_folder_without_weights(&encoder)
                    .expect("the tiny encoder's files should be writable");
            }
            let weights = encoder.join("model.safetensors");
            write(&weights, data);
            let config = spineseg_text::BertConfig::load(&encoder.join("config.json")).expect("the tiny config reads");
            spineseg_text::weights::load_bert(&weights, &config, &spineseg_text::Device::flex()).is_ok()
        }
        Target::Gradings => {
            let path = dir.join("gradings.csv");
            write(&path, data);
            spineseg_findings::read_reference(&path).is_ok()
        }
        Target::FindingsModel => {
            let path = dir.join("findings_model.json");
            write(&path, data);
            spineseg_infer::findings_model::FindingsManifest::load(&path).is_ok()
        }
        Target::RoiSet => {
            let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
            let (index, rest) = data.split_at(split);
            let root = dir.join("rois");
            write(&root.join(spineseg_findings::roi_set::ROI_SET_FILE), index);
            write(&root.join(spineseg_findings::roi_set::ROI_PIXELS_FILE), rest.get(1..).unwrap_or(&[]));
            spineseg_findings::roi_set::RoiSet::read(&root).is_ok()
        }
    }
}

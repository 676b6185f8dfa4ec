//! The encoder on a tiny random BERT folder written by the test itself (no download): weights
//! loaded by name, agreement with a plain f64 re-implementation of Hugging Face's BertModel,
//! shapes, unit norm, padding invariance, truncation, and errors that name the file.

use burn::tensor::Device;
use spineseg_text::test_support::{
    tiny_tensors, write_safetensors, write_tiny_folder_without_weights, write_tiny_test_encoder, NamedTensor,
    TINY_HEADS, TINY_HIDDEN, TINY_LAYERS, TINY_MAX_SEQ_LENGTH, TINY_VOCAB,
};
use spineseg_text::{TextEncoder, TextError};
use std::collections::HashMap;
use std::path::Path;

fn load(dir: &Path) -> TextEncoder {
    TextEncoder::load(dir, &Device::flex()).expect("the tiny folder should load")
}

fn tiny_encoder() -> (tempfile::TempDir, TextEncoder) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_test_encoder(dir.path()).unwrap();
    let encoder = load(dir.path());
    (dir, encoder)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn host(tensor: burn::tensor::Tensor<1>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().unwrap()
}

fn host2(tensor: burn::tensor::Tensor<2>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().unwrap()
}

/// Hugging Face BertModel + mean pooling + normalize, written out in f64 loops straight from
/// the checkpoint's tensors (PyTorch layout: Linear weight [out, in], y = x W^T + b).
struct Reference {
    t: HashMap<String, NamedTensor>,
}

impl Reference {
    fn get(&self, name: &str) -> &[f32] {
        &self.t[name].values
    }

    fn linear(&self, x: &[Vec<f64>], name: &str) -> Vec<Vec<f64>> {
        let w = self.get(&format!("{name}.weight"));
        let b = self.get(&format!("{name}.bias"));
        let d_out = b.len();
        let d_in = w.len() / d_out;
        x.iter()
            .map(|row| {
                (0..d_out)
                    .map(|o| b[o] as f64 + (0..d_in).map(|i| w[o * d_in + i] as f64 * row[i]).sum::<f64>())
                    .collect()
            })
            .collect()
    }

    fn layer_norm(&self, x: &[Vec<f64>], name: &str) -> Vec<Vec<f64>> {
        let g = self.get(&format!("{name}.weight"));
        let b = self.get(&format!("{name}.bias"));
        x.iter()
            .map(|row| {
                let n = row.len() as f64;
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                row.iter()
                    .enumerate()
                    .map(|(i, v)| (v - mean) / (var + 1e-12).sqrt() * g[i] as f64 + b[i] as f64)
                    .collect()
            })
            .collect()
    }

    fn embed(&self, ids: &[u32]) -> Vec<f64> {
        let h = TINY_HIDDEN;
        let (word, pos, typ) = (
            self.get("embeddings.word_embeddings.weight"),
            self.get("embeddings.position_embeddings.weight"),
            self.get("embeddings.token_type_embeddings.weight"),
        );
        let x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| (0..h).map(|j| (word[id as usize * h + j] + pos[p * h + j] + typ[j]) as f64).collect())
            .collect();
        let mut x = self.layer_norm(&x, "embeddings.LayerNorm");
        let (heads, hd, n) = (TINY_HEADS, TINY_HIDDEN / TINY_HEADS, ids.len());
        for layer in 0..TINY_LAYERS {
            let p = format!("encoder.layer.{layer}");
            let q = self.linear(&x, &format!("{p}.attention.self.query"));
            let k = self.linear(&x, &format!("{p}.attention.self.key"));
            let v = self.linear(&x, &format!("{p}.attention.self.value"));
            let mut context = vec![vec![0.0; h]; n];
            for head in 0..heads {
                let r = head * hd..(head + 1) * hd;
                for a in 0..n {
                    let scores: Vec<f64> = (0..n)
                        .map(|b| r.clone().map(|j| q[a][j] * k[b][j]).sum::<f64>() / (hd as f64).sqrt())
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = exp.iter().sum();
                    for j in r.clone() {
                        context[a][j] = (0..n).map(|b| exp[b] / total * v[b][j]).sum();
                    }
                }
            }
            let attn = self.linear(&context, &format!("{p}.attention.output.dense"));
            let attn: Vec<Vec<f64>> =
                attn.iter().zip(&x).map(|(a, r)| a.iter().zip(r).map(|(a, r)| a + r).collect()).collect();
            let attn = self.layer_norm(&attn, &format!("{p}.attention.output.LayerNorm"));
            let inner = self.linear(&attn, &format!("{p}.intermediate.dense"));
            let inner: Vec<Vec<f64>> =
                inner.iter().map(|row| row.iter().map(|&z| 0.5 * z * (1.0 + erf(z / 2f64.sqrt()))).collect()).collect();
            let out = self.linear(&inner, &format!("{p}.output.dense"));
            let out: Vec<Vec<f64>> =
                out.iter().zip(&attn).map(|(a, r)| a.iter().zip(r).map(|(a, r)| a + r).collect()).collect();
            x = self.layer_norm(&out, &format!("{p}.output.LayerNorm"));
        }
        let mean: Vec<f64> = (0..h).map(|j| x.iter().map(|row| row[j]).sum::<f64>() / n as f64).collect();
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        mean.iter().map(|v| v / norm).collect()
    }
}

/// erf to ~1e-13 by its Maclaurin series (|z| small here) or the continued-fraction tail.
fn erf(z: f64) -> f64 {
    if z.abs() > 5.0 {
        return z.signum();
    }
    // Series: erf(z) = 2/sqrt(pi) * sum_n (-1)^n z^(2n+1) / (n! (2n+1)).
    let mut sum = 0.0;
    let mut term = z;
    let mut n = 0.0;
    while term.abs() > 1e-17 || n < 5.0 {
        sum += term / (2.0 * n + 1.0);
        n += 1.0;
        term *= -z * z / n;
        if n > 200.0 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

#[test]
fn erf_is_accurate() {
    assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
    assert!((erf(-2.0) + 0.995_322_265_018_952_7).abs() < 1e-12);
}

#[test]
fn weights_are_loaded_by_checkpoint_names() {
    let (_dir, encoder) = tiny_encoder();
    let tensors: HashMap<String, NamedTensor> = tiny_tensors(7).into_iter().map(|t| (t.name.clone(), t)).collect();
    let model = encoder.model();
    assert_eq!(model.layers.len(), TINY_LAYERS);
    assert_eq!(
        host2(model.embeddings.word_embeddings.weight.val()),
        tensors["embeddings.word_embeddings.weight"].values
    );
    assert_eq!(host(model.layers[1].output_norm.gamma.val()), tensors["encoder.layer.1.output.LayerNorm.weight"].values);
    // PyTorch [out, in] became burn [in, out].
    let torch = &tensors["encoder.layer.1.intermediate.dense.weight"];
    let [d_out, d_in] = [torch.shape[0], torch.shape[1]];
    let burn_weight = model.layers[1].intermediate.weight.val();
    assert_eq!(burn_weight.dims(), [d_in, d_out]);
    let burn_weight = host2(burn_weight);
    for o in 0..d_out {
        for i in 0..d_in {
            assert_eq!(burn_weight[i * d_out + o], torch.values[o * d_in + i]);
        }
    }
    assert_eq!(
        host(model.layers[0].attention.key.bias.as_ref().unwrap().val()),
        tensors["encoder.layer.0.attention.self.key.bias"].values
    );
}

#[test]
fn a_bert_prefix_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_folder_without_weights(dir.path()).unwrap();
    let prefixed: Vec<NamedTensor> =
        tiny_tensors(7).into_iter().map(|t| NamedTensor { name: format!("bert.{}", t.name), ..t }).collect();
    write_safetensors(&dir.path().join("model.safetensors"), &prefixed).unwrap();
    let prefixed = load(dir.path()).embed(&["l4 vertebral body"]).unwrap();
    let (_plain_dir, plain) = tiny_encoder();
    assert_eq!(prefixed, plain.embed(&["l4 vertebral body"]).unwrap());
}

#[test]
fn matches_a_plain_reimplementation_of_bert() {
    let (_dir, encoder) = tiny_encoder();
    let reference = Reference { t: tiny_tensors(7).into_iter().map(|t| (t.name.clone(), t)).collect() };
    let texts = ["L4 vertebral body", "the intervertebral disc between L4 and L5", "sacrum", "spinal canal at L3"];
    let embeddings = encoder.embed(&texts).unwrap();
    for (text, got) in texts.iter().zip(&embeddings) {
        let ids = encoder.tokenizer().encode(text).unwrap().input_ids;
        let expected: Vec<f32> = reference.embed(&ids).iter().map(|&v| v as f32).collect();
        let diff = max_abs_diff(got, &expected);
        assert!(diff < 2e-5, "{text:?}: max abs diff {diff}");
    }
}

#[test]
fn embeddings_have_the_hidden_size_and_unit_norm() {
    let (_dir, encoder) = tiny_encoder();
    assert_eq!(encoder.embedding_dim(), TINY_HIDDEN);
    let texts = ["L4 vertebral body", "sacrum", "", "zebra crossing"];
    let embeddings = encoder.embed(&texts).unwrap();
    assert_eq!(embeddings.len(), texts.len());
    for (text, e) in texts.iter().zip(&embeddings) {
        assert_eq!(e.len(), TINY_HIDDEN);
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{text:?}: norm {norm}");
    }
    assert_ne!(embeddings[0], embeddings[1]);
    assert!(encoder.embed::<&str>(&[]).unwrap().is_empty());
}

#[test]
fn tokenizer_lowercases_splits_and_adds_special_tokens() {
    let (_dir, encoder) = tiny_encoder();
    let id = |token: &str| TINY_VOCAB.iter().position(|t| *t == token).unwrap() as u32;
    let tokens = encoder.tokenizer().encode("L4 Vertebrals, zebra").unwrap();
    assert_eq!(
        tokens.input_ids,
        vec![id("[CLS]"), id("l4"), id("vertebral"), id("##s"), id(","), id("[UNK]"), id("[SEP]")]
    );
    assert!(tokens.token_type_ids.iter().all(|&t| t == 0));
}

#[test]
fn padding_does_not_change_an_embedding() {
    let (_dir, encoder) = tiny_encoder();
    let short = "sacrum";
    let long = "the intervertebral disc between the l4 and l5 vertebral body";
    let alone = encoder.embed(&[short]).unwrap().remove(0);
    let batched = encoder.embed(&[long, short, "l1"]).unwrap();
    let diff = max_abs_diff(&alone, &batched[1]);
    assert!(diff < 1e-5, "padding changed the embedding by {diff}");
    let long_alone = encoder.embed(&[long]).unwrap().remove(0);
    assert!(max_abs_diff(&long_alone, &batched[0]) < 1e-5);
}

#[test]
fn long_texts_are_truncated_to_max_seq_length() {
    let (_dir, encoder) = tiny_encoder();
    assert_eq!(encoder.sentence_config().max_seq_length, TINY_MAX_SEQ_LENGTH);
    let long = "l1 l2 l3 l4 l5 ".repeat(10);
    let tokens = encoder.tokenizer().encode(&long).unwrap();
    assert_eq!(tokens.input_ids.len(), TINY_MAX_SEQ_LENGTH);
    assert_eq!(*tokens.input_ids.last().unwrap(), 3, "[SEP] should survive truncation");
    let embedding = encoder.embed(&[long.as_str()]).unwrap();
    assert_eq!(embedding[0].len(), TINY_HIDDEN);
}

#[test]
fn a_missing_tensor_is_named_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_folder_without_weights(dir.path()).unwrap();
    let missing = "encoder.layer.1.attention.self.value.weight";
    let tensors: Vec<NamedTensor> = tiny_tensors(7).into_iter().filter(|t| t.name != missing).collect();
    let weights = dir.path().join("model.safetensors");
    write_safetensors(&weights, &tensors).unwrap();
    let error = TextEncoder::load(dir.path(), &Device::flex()).unwrap_err();
    assert!(matches!(&error, TextError::MissingTensor { path, name } if path == &weights && name == missing), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(missing) && message.contains("model.safetensors"), "{message}");
}

#[test]
fn a_wrong_shape_is_named_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_folder_without_weights(dir.path()).unwrap();
    let name = "encoder.layer.0.intermediate.dense.weight";
    let tensors: Vec<NamedTensor> = tiny_tensors(7)
        .into_iter()
        .map(|t| if t.name == name { NamedTensor { shape: vec![t.shape[1], t.shape[0]], ..t } } else { t })
        .collect();
    write_safetensors(&dir.path().join("model.safetensors"), &tensors).unwrap();
    let message = TextEncoder::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(message.contains(name) && message.contains("model.safetensors") && message.contains("[32, 64]"), "{message}");
}

#[test]
fn config_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_test_encoder(dir.path()).unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"hidden_size": 32}"#).unwrap();
    let message = TextEncoder::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(message.contains("config.json") && message.contains("unreadable config"), "{message}");

    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let message = TextEncoder::load(dir.path(), &Device::flex()).unwrap_err().to_string();
    assert!(message.contains("config.json") && message.contains("cannot read"), "{message}");
}

#[test]
fn unsupported_pooling_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_test_encoder(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let error = TextEncoder::load(dir.path(), &Device::flex()).unwrap_err();
    assert!(matches!(error, TextError::Unsupported { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("1_Pooling") && message.contains("pooling_mode_cls_token"), "{message}");
}

#[test]
fn without_normalize_module_embeddings_are_not_normalised() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_test_encoder(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("modules.json"),
        r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let raw = load(dir.path()).embed(&["sacrum"]).unwrap().remove(0);
    let (_dir, normalised) = tiny_encoder();
    let unit = normalised.embed(&["sacrum"]).unwrap().remove(0);
    let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "norm {norm}");
    let rescaled: Vec<f32> = raw.iter().map(|v| v / norm).collect();
    assert!(max_abs_diff(&rescaled, &unit) < 1e-5);
}

#[test]
fn an_autodiff_device_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_test_encoder(dir.path()).unwrap();
    let encoder = TextEncoder::load(dir.path(), &Device::flex().autodiff()).unwrap();
    assert!(!encoder.model().embeddings.word_embeddings.weight.val().device().is_autodiff());
    let (_dir, plain) = tiny_encoder();
    assert_eq!(encoder.embed(&["sacrum"]).unwrap(), plain.embed(&["sacrum"]).unwrap());
}

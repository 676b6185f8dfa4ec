//! What a new user sees in the first hour: label names that follow the file (`overlay`, `info`,
//! `evaluate` read the mask's `.labels.json`), `predict --preview` and its structure table, and
//! `spineseg report`'s HTML page, rendered by a real browser (headless chromium) where one is
//! installed.

use spineseg_io::{read_labels, write_volume, AnyVolume, Label};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;
use support::spineseg;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (stdout, stderr) of a command that must succeed.
fn run_ok(out: Output) -> (String, String) {
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// One small phantom case: (image, label file in ontology ids).
fn phantom(dir: &Path, cases: usize) -> PathBuf {
    let data = dir.join("phantom");
    run_ok(spineseg(&["phantom", "--out", s(&data), "--cases", &cases.to_string(), "--seed", "4", "--small"]));
    data
}

#[test]
fn names_follow_the_file_in_overlay_info_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 1);
    let image = data.join("imagesTr/phantom_000_0000.nii.gz");
    let ontology_mask = data.join("labelsTr/phantom_000.nii.gz");
    // The same mask in a dataset's own numbering (1, 2, ... in id order, as nnU-Net datasets
    // number their labels), with a predict-style labels.json beside it.
    let labels = read_labels(&ontology_mask).unwrap();
    let ids: Vec<Label> = {
        let mut v: Vec<Label> = labels.data().iter().copied().filter(|&v| v != 0).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let value_of: BTreeMap<Label, Label> = ids.iter().enumerate().map(|(i, &id)| (id, i as Label + 1)).collect();
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    let dataset_mask = masks.join("seg.nii.gz");
    write_volume(&dataset_mask, &AnyVolume::from(labels.map(|v| if *v == 0 { 0 } else { value_of[v] }))).unwrap();
    let structures: Vec<serde_json::Value> = value_of
        .iter()
        .map(|(&id, &value)| serde_json::json!({"structure_id": id, "dataset_value": value, "dataset_name": format!("class {value}")}))
        .collect();
    let sidecar = masks.join("seg.labels.json");
    std::fs::write(&sidecar, serde_json::json!({"dataset": "test", "structures": structures}).to_string()).unwrap();

    // overlay: the dataset-valued mask with its sidecar draws exactly the ontology-valued one.
    let png = |labels: &Path, extra: &[&str], name: &str| -> (Vec<u8>, String) {
        let out = dir.path().join(name);
        let mut args = vec!["overlay", s(&image), "--labels", s(labels), "-o", s(&out)];
        args.extend_from_slice(extra);
        let (_, stderr) = run_ok(spineseg(&args));
        (std::fs::read(&out).unwrap(), stderr)
    };
    let (reference, _) = png(&ontology_mask, &["--labels-json", s(&data.join("dataset.json"))], "reference.png");
    let (followed, log) = png(&dataset_mask, &[], "followed.png");
    assert!(log.contains("label names from") && log.contains("seg.labels.json"), "{log}");
    assert!(followed == reference, "a mask with its labels.json renders like the same mask in ontology ids");
    // Without the sidecar the values are read as ontology ids, and the log says so.
    let moved = dir.path().join("elsewhere.labels.json");
    std::fs::rename(&sidecar, &moved).unwrap();
    let (guessed, log) = png(&dataset_mask, &[], "guessed.png");
    assert!(log.contains("read as spineseg ontology ids"), "{log}");
    assert!(guessed != reference);
    // --labels-json names the file explicitly.
    let (explicit, _) = png(&dataset_mask, &["--labels-json", s(&moved)], "explicit.png");
    assert!(explicit == reference);
    std::fs::rename(&moved, &sidecar).unwrap();

    // info: the dataset's values with the sidecar's names.
    let l4 = value_of[&23];
    let (stdout, _) = run_ok(spineseg(&["info", s(&dataset_mask)]));
    assert!(stdout.contains("label names from"), "{stdout}");
    let row =
        stdout.lines().find(|l| l.trim_start().starts_with(&format!("{l4} "))).unwrap_or_else(|| panic!("{stdout}"));
    assert!(row.contains(&format!("class {l4}")), "{row}");

    // evaluate: with no dataset.json beside the references, the predictions' sidecar names them.
    let refs = dir.path().join("refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::copy(&dataset_mask, refs.join("seg.nii.gz")).unwrap();
    let out = dir.path().join("eval");
    let (_, log) = run_ok(spineseg(&["evaluate", "--pred", s(&masks), "--ref", s(&refs), "--out", s(&out)]));
    assert!(log.contains("seg.labels.json"), "{log}");
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(csv.lines().any(|l| l.contains(&format!(",{l4},class {l4},"))), "{csv}");
}

#[test]
fn predict_writes_previews_a_structure_table_and_label_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 2);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/lumbar-2d");
    let (pred, preview) = (dir.path().join("pred"), dir.path().join("preview"));
    let (stdout, stderr) = run_ok(spineseg(&[
        "predict",
        "-i",
        s(&data.join("imagesTr")),
        "-o",
        s(&pred),
        "-m",
        s(&model),
        "--preview",
        s(&preview),
    ]));
    for case in ["phantom_000", "phantom_001"] {
        // One summary line per case on stdout.
        assert!(stdout.lines().any(|l| l.starts_with(&format!("{case}: bodies "))), "{stdout}");
        let picture = read_png(&preview.join(format!("{case}.png")));
        assert!(picture.0 > 100 && picture.1 > 100, "{picture:?}");
        assert!(pred.join(format!("{case}.labels.json")).is_file());
    }
    assert!(stderr.contains("structure table:"), "{stderr}");
    let csv = std::fs::read_to_string(pred.join("structures.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "case,structure,structure_id,label,voxels,volume_ml,first_sagittal_slice,last_sagittal_slice,at_edge,level_confidence,level_count_ambiguous,flags"
    );
    // Every written structure has a row, with its volume and level confidence.
    let seg = read_labels(&pred.join("phantom_000.nii.gz")).unwrap();
    let found: std::collections::BTreeSet<Label> = seg.data().iter().copied().filter(|&v| v != 0).collect();
    let rows: Vec<Vec<&str>> =
        csv.lines().skip(1).map(|l| l.split(',').collect()).filter(|r: &Vec<&str>| r[0] == "phantom_000").collect();
    let labelled: std::collections::BTreeSet<Label> = rows.iter().filter_map(|r| r[3].parse().ok()).collect();
    assert_eq!(labelled, found);
    assert!(rows.iter().all(|r| r[9].parse::<f64>().is_ok()), "level confidence on every row: {csv}");

    // A single named output file: the table goes beside it and prints per structure.
    let one = dir.path().join("one.nii.gz");
    let (stdout, _) = run_ok(spineseg(&[
        "predict",
        "-i",
        s(&data.join("imagesTr/phantom_000_0000.nii.gz")),
        "-o",
        s(&one),
        "-m",
        s(&model),
    ]));
    assert!(stdout.contains("volume mL") && stdout.contains("spinal canal"), "{stdout}");
    assert!(dir.path().join("one.structures.csv").is_file() && dir.path().join("one.labels.json").is_file());
}

#[test]
fn report_flags_a_missing_level_and_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 3);
    // The references as "predictions", one with L3 (ontology id 22) removed.
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    for case in ["phantom_000", "phantom_001", "phantom_002"] {
        let from = data.join(format!("labelsTr/{case}.nii.gz"));
        let mut labels = read_labels(&from).unwrap();
        if case == "phantom_001" {
            assert!(labels.data().contains(&22), "the phantom shows L3");
            labels.data_mut().iter_mut().filter(|v| **v == 22).for_each(|v| *v = 0);
        }
        write_volume(&masks.join(format!("{case}.nii.gz")), &AnyVolume::from(labels)).unwrap();
    }
    let html = dir.path().join("out/report.html");
    let (stdout, stderr) = run_ok(spineseg(&[
        "report",
        "--pred",
        s(&masks),
        "--images",
        s(&data.join("imagesTr")),
        "--ref",
        s(&data.join("labelsTr")),
        "-o",
        s(&html),
    ]));
    let flagged = stdout.lines().find(|l| l.starts_with("phantom_001:")).unwrap();
    assert!(flagged.contains("FLAGS: L3: missing between L2 and L4"), "{stdout}");
    assert!(stderr.contains("1 flagged") || stderr.contains("flagged"), "{stderr}");
    let csv = std::fs::read_to_string(dir.path().join("out/report.structures.csv")).unwrap();
    assert!(
        csv.lines().any(|l| l.starts_with("phantom_001,L3,22,,0,") && l.ends_with("missing between L2 and L4")),
        "{csv}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    // Worst first: the case with the missing level (lowest mean Dice) leads the table.
    let first_row = page.find("<tbody>").map(|i| &page[i..]).unwrap();
    assert!(first_row.find("phantom_001").unwrap() < first_row.find("phantom_000").unwrap());
    assert_eq!(page.matches("<img class=\"preview\"").count(), 3);
    assert!(!page.contains("http://") && !page.contains("https://"), "self-contained: no network");

    let Some(chromium) = find_chromium() else {
        eprintln!("SKIPPED the browser check: no chromium installed (.ci/run installs Debian's chromium)");
        return;
    };
    // The DOM after the page's scripts ran: every picture decoded, every case in the table.
    let url = format!("file://{}", html.display());
    let dom = Command::new(&chromium).args(headless_flags(dir.path())).args(["--dump-dom", &url]).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("data-images-loaded=\"3\"") && dom.contains("data-cases-shown=\"3\""), "{dom:.2000}");
    // A screenshot of the page: not blank.
    let shot = dir.path().join("shot.png");
    let out = Command::new(&chromium)
        .args(headless_flags(dir.path()))
        .args([&format!("--screenshot={}", shot.display()), "--window-size=1200,900", &url])
        .output()
        .unwrap();
    assert!(shot.is_file(), "{}", String::from_utf8_lossy(&out.stderr));
    let (width, height, pixels) = read_png(&shot);
    assert_eq!((width, height), (1200, 900));
    let distinct: std::collections::BTreeSet<[u8; 3]> = pixels.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
    assert!(distinct.len() > 50, "the screenshot shows text and pictures ({} colours)", distinct.len());
}

fn headless_flags(profile: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--allow-file-access-from-files".into(),
        format!("--user-data-dir={}", profile.join("chromium-profile").display()),
    ]
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// (width, height, RGB bytes) of a PNG file.
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb = buf[..info.buffer_size()].chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect();
    (info.width, info.height, rgb)
}

#[test]
fn every_subcommand_has_a_one_line_description() {
    for command in [&[][..], &["dataset"][..], &["text"][..], &["model"][..]] {
        let mut args = command.to_vec();
        args.push("--help");
        let (help, _) = run_ok(spineseg(&args));
        let listed: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert!(listed.len() >= 2, "{help}");
        for line in listed {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap();
            assert!(words.next().is_some(), "`spineseg {} {name}` has no description in --help", command.join(" "));
        }
    }
}

//! One self-contained HTML page for a folder of predictions (`spineseg report`): a sortable table
//! of the cases, worst first, and per case its picture, its structures and their flags (and, with
//! references, its Dice per structure). Pictures are embedded as data URIs and the sorting is a
//! few lines of inline script, so the page opens from disk with no server and no network.

use spineseg_io::Label;
use spineseg_metrics::structures::{found_spans, CaseStructures};
use std::collections::BTreeMap;
use std::fmt::Write;

/// One case of the report.
#[derive(Debug, Clone)]
pub struct ReportCase {
    pub structures: CaseStructures,
    /// The preview picture as PNG bytes.
    pub picture_png: Option<Vec<u8>>,
    /// Dice per label value against a reference, for the structures the reference contains
    /// (empty without references).
    pub dice: BTreeMap<Label, f64>,
}

impl ReportCase {
    /// Mean Dice over the structures with a reference, if any.
    pub fn mean_dice(&self) -> Option<f64> {
        let values: Vec<f64> = self.dice.values().copied().filter(|d| d.is_finite()).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// Worst first: with references the lowest mean Dice first; then the most flags, then the
/// least sure level count, then by name.
pub fn worst_first(cases: &mut [ReportCase]) {
    cases.sort_by(|a, b| {
        let dice = |c: &ReportCase| c.mean_dice().unwrap_or(f64::INFINITY);
        let confidence =
            |c: &ReportCase| c.structures.levels.as_ref().and_then(|l| l.confidence).unwrap_or(f64::INFINITY);
        dice(a)
            .total_cmp(&dice(b))
            .then(b.structures.flags.len().cmp(&a.structures.flags.len()))
            .then(confidence(a).total_cmp(&confidence(b)))
            .then(a.structures.case.cmp(&b.structures.case))
    });
}

/// The HTML page for `cases`, in the order given (see [`worst_first`]).
pub fn html_report(title: &str, cases: &[ReportCase]) -> String {
    let with_dice = cases.iter().any(|c| !c.dice.is_empty());
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(title),
        escape(title)
    );
    let flagged = cases.iter().filter(|c| !c.structures.flags.is_empty()).count();
    let _ = writeln!(
        html,
        "<p>{} case(s), {} with flags. Worst first{}; click a column header to sort, a case to see it.</p>",
        cases.len(),
        flagged,
        if with_dice { " (lowest mean Dice against the references)" } else { " (most flags, least sure level count)" }
    );
    html.push_str("<table id=\"cases\" class=\"sortable\">\n<thead><tr><th data-type=\"number\">rank</th><th>case</th><th>bodies</th><th>discs</th><th>other</th><th data-type=\"number\">level confidence</th>");
    if with_dice {
        html.push_str("<th data-type=\"number\">mean Dice</th>");
    }
    html.push_str("<th data-type=\"number\">flags</th><th>what to look at</th></tr></thead>\n<tbody>\n");
    for (rank, case) in cases.iter().enumerate() {
        let s = &case.structures;
        let (bodies, discs, other) = found_spans(s);
        let other = other.join(", ");
        let confidence = s.levels.as_ref().and_then(|l| l.confidence).map_or(String::new(), |c| format!("{c:.2}"));
        let _ = write!(
            html,
            "<tr class=\"{}\"><td>{}</td><td><a href=\"#case-{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            if s.flags.is_empty() { "ok" } else { "flagged" },
            rank + 1,
            escape(&s.case),
            escape(&s.case),
            escape(&bodies),
            escape(&discs),
            escape(&other),
            confidence
        );
        if with_dice {
            let _ = write!(html, "<td>{}</td>", case.mean_dice().map_or(String::new(), |d| format!("{d:.3}")));
        }
        let _ = writeln!(html, "<td>{}</td><td>{}</td></tr>", s.flags.len(), escape(&s.flags.join("; ")));
    }
    html.push_str("</tbody>\n</table>\n");

    for case in cases {
        let s = &case.structures;
        let _ =
            writeln!(html, "<section class=\"case\" id=\"case-{}\">\n<h2>{}</h2>", escape(&s.case), escape(&s.case));
        if let Some(levels) = &s.levels {
            let _ = writeln!(
                html,
                "<p>Level count: {}{}</p>",
                levels.confidence.map_or("no confidence".to_string(), |c| format!("confidence {c:.2}")),
                levels.ambiguous.as_ref().map_or(String::new(), |r| format!(", <b>ambiguous</b>: {}", escape(r)))
            );
        }
        html.push_str("<div class=\"row\">");
        if let Some(png) = &case.picture_png {
            let _ = write!(
                html,
                "<img class=\"preview\" alt=\"{} mid-sagittal preview\" src=\"data:image/png;base64,{}\">",
                escape(&s.case),
                base64(png)
            );
        }
        html.push_str(
            "<table class=\"structures\"><thead><tr><th>structure</th><th>volume mL</th><th>sagittal slices</th>",
        );
        if !case.dice.is_empty() {
            html.push_str("<th>Dice</th>");
        }
        html.push_str("<th>flags</th></tr></thead><tbody>\n");
        for r in &s.rows {
            let slices = r.sagittal_slices.map_or("-".to_string(), |(a, b)| format!("{a}..{b}"));
            let _ = write!(
                html,
                "<tr class=\"{}\"><td>{}</td><td>{:.1}</td><td>{}</td>",
                if r.flags.is_empty() { "ok" } else { "flagged" },
                escape(&r.name),
                r.volume_ml,
                slices
            );
            if !case.dice.is_empty() {
                let dice = r.label.and_then(|l| case.dice.get(&l));
                let _ = write!(html, "<td>{}</td>", dice.map_or(String::new(), |d| format!("{d:.3}")));
            }
            let _ = writeln!(html, "<td>{}</td></tr>", escape(&r.flags.join("; ")));
        }
        html.push_str("</tbody></table></div>\n</section>\n");
    }
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

/// Text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#eee;cursor:pointer}tr.flagged td{background:#fff1e6}\
.row{display:flex;gap:1.5em;align-items:flex-start;flex-wrap:wrap}img.preview{width:480px;max-width:100%;image-rendering:pixelated;border:1px solid #999}\
section.case{border-top:2px solid #888;margin-top:1.5em}";

/// Sorts a table by the clicked column (numbers numerically, empty cells last) and records on
/// <body> how many embedded pictures decoded (`data-images-loaded`), which the browser test reads.
const SCRIPT: &str = r#"
document.querySelectorAll('table.sortable th').forEach(function (th, column) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var numeric = th.dataset.type === 'number';
    var ascending = th.dataset.order !== 'asc';
    th.dataset.order = ascending ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].textContent, y = b.cells[column].textContent;
      if (x === '' || y === '') { return (x === '') - (y === ''); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? c : -c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
window.addEventListener('load', function () {
  var images = document.querySelectorAll('img.preview');
  var loaded = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { loaded += 1; } });
  document.body.dataset.imagesLoaded = String(loaded);
  document.body.dataset.casesShown = String(document.querySelectorAll('#cases tbody tr').length);
});
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use spineseg_metrics::structures::{LevelVerdict, StructureRow};

    fn case(name: &str, flags: usize, confidence: f64) -> ReportCase {
        let row = StructureRow {
            label: Some(23),
            structure_id: Some(spineseg_anatomy::ontology::StructureId(23)),
            name: "L4".into(),
            voxels: 10,
            volume_ml: 25.0,
            sagittal_slices: Some((3, 9)),
            at_edge: false,
            flags: vec![],
        };
        ReportCase {
            structures: CaseStructures {
                case: name.into(),
                rows: vec![row],
                levels: Some(LevelVerdict { confidence: Some(confidence), ambiguous: None }),
                flags: (0..flags).map(|i| format!("flag {i} <b>")).collect(),
            },
            picture_png: Some(vec![1, 2, 3]),
            dice: BTreeMap::new(),
        }
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn worst_cases_first_and_text_escaped() {
        let mut cases = vec![case("good", 0, 0.9), case("unsure", 0, 0.3), case("flagged", 2, 0.9)];
        worst_first(&mut cases);
        let order: Vec<&str> = cases.iter().map(|c| c.structures.case.as_str()).collect();
        assert_eq!(order, ["flagged", "unsure", "good"]);
        let html = html_report("Report <x>", &cases);
        assert!(html.contains("<title>Report &lt;x&gt;</title>"));
        assert!(html.contains("flag 0 &lt;b&gt;") && !html.contains("flag 0 <b>"));
        assert_eq!(html.matches("<img class=\"preview\"").count(), 3);
        assert!(html.contains("src=\"data:image/png;base64,AQID\""));
        assert!(html.find("id=\"case-flagged\"").unwrap() < html.find("id=\"case-good\"").unwrap());

        // With references the lowest mean Dice comes first, whatever the flags.
        cases[2].dice.insert(23, 0.2);
        cases[0].dice.insert(23, 0.9);
        worst_first(&mut cases);
        assert_eq!(cases[0].structures.case, "good");
        assert!(html_report("r", &cases).contains("<th data-type=\"number\">mean Dice</th>"));
    }
}

//! A Prometheus exposition read back by a test: each family's `# TYPE` and its
//! samples, to check names, types and values the way a scraper sees them.

use std::collections::BTreeMap;

/// A Prometheus exposition read back: each family's TYPE and its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name -> type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

/// One sample line.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Exposition {
    /// Parses the text format (`# TYPE` lines and `name{k="v",...} value` samples).
    pub fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').expect("TYPE line");
                e.types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("label");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            e.samples.push(Sample {
                name: name.to_string(),
                labels,
                value: value.parse().expect("sample value"),
            });
        }
        e
    }

    /// The value of `name` with every label in `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The family a sample belongs to (`x_total` of counter `x`, `x_bucket` of
    /// histogram `x`, ...).
    pub fn family_of(&self, sample: &str) -> Option<(&str, &str)> {
        if let Some((n, t)) = self.types.get_key_value(sample) {
            return Some((n, t));
        }
        for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if let Some((n, t)) = self.types.get_key_value(base) {
                    return Some((n, t));
                }
            }
        }
        None
    }
}

//! `-o table|wide|json|yaml`: how a command prints what the controller answered.
//! Tables are for people (aligned columns, times relative); `wide` adds columns; json
//! and yaml print the contract's objects exactly as the API gives them, for scripts.

use clap::ValueEnum;
use serde::Serialize;

/// The output format (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns, the most useful ones.
    Table,
    /// The table with more columns.
    Wide,
    /// The API's objects as JSON (a list prints as a JSON array).
    Json,
    /// The API's objects as YAML (a list prints as a YAML sequence).
    Yaml,
}

impl Format {
    /// Whether this format is for people (and may show progress and relative times).
    pub fn is_table(self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

/// An object that prints as a table row.
pub trait Columns: Serialize {
    /// Column titles (`wide`: with the extra ones).
    fn headers(wide: bool) -> Vec<&'static str>;
    /// This object's cells, in the order of [`Columns::headers`].
    fn cells(&self, wide: bool) -> Vec<String>;
}

/// A list in `f`, ending with a newline.
pub fn list<T: Columns>(f: Format, items: &[T]) -> anyhow::Result<String> {
    match f {
        Format::Table | Format::Wide => {
            let wide = f == Format::Wide;
            let rows: Vec<Vec<String>> = items.iter().map(|i| i.cells(wide)).collect();
            Ok(table(&T::headers(wide), &rows))
        }
        Format::Json | Format::Yaml => data(f, &items),
    }
}

/// One object in `f` (a table of one row), ending with a newline.
pub fn one<T: Columns>(f: Format, item: &T) -> anyhow::Result<String> {
    match f {
        Format::Table | Format::Wide => list(f, std::slice::from_ref(item)),
        Format::Json | Format::Yaml => data(f, item),
    }
}

/// `v` as pretty JSON or YAML (tables fall back to JSON), ending with a newline.
pub fn data<T: Serialize + ?Sized>(f: Format, v: &T) -> anyhow::Result<String> {
    Ok(match f {
        Format::Yaml => serde_yaml_ng::to_string(v)?,
        _ => serde_json::to_string_pretty(v)? + "\n",
    })
}

/// `v` on one line (JSON) or as one YAML document: a stream's item (`events`, `--watch`).
pub fn record<T: Serialize + ?Sized>(f: Format, v: &T) -> anyhow::Result<String> {
    Ok(match f {
        Format::Yaml => format!("---\n{}", serde_yaml_ng::to_string(v)?),
        _ => serde_json::to_string(v)? + "\n",
    })
}

/// Left-aligned columns two spaces apart, titles in capitals.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(&c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().map(|h| h.to_uppercase()));
    for r in rows {
        out.push_str(&line(&mut r.iter().cloned()));
    }
    out
}

/// An optional value as a cell (`-` when absent).
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// `k=v` pairs joined by commas (`-` when none).
pub fn pairs<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    or_dash(Some(
        m.into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_aligns_its_columns_under_capital_titles() {
        let t = table(
            &["id", "name"],
            &[
                vec!["a".into(), "web".into()],
                vec!["long-id".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       NAME\na        web\nlong-id  x\n");
    }
}

//! Reading Prometheus text exposition (format 0.0.4) as scraped from a
//! member's `/metrics`: enough of the grammar to check names, types, label
//! sets and values, and to feed `promtool test rules` with real series.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Series {
    /// `name{a="x",b="y"}` in promtool's input-series notation.
    pub fn selector(&self, extra: &[(&str, &str)]) -> String {
        let mut labels = self.labels.clone();
        for (k, v) in extra {
            labels.insert(k.to_string(), v.to_string());
        }
        let inner: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{}{{{}}}", self.name, inner.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A whole scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub series: Vec<Series>,
    /// `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> anyhow::Result<Scrape> {
        let mut scrape = Scrape::default();
        for (n, line) in text.lines().enumerate() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    scrape.types.insert(name.to_string(), kind.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let series = parse_line(line)
                .ok_or_else(|| anyhow::anyhow!("line {}: cannot parse {line:?}", n + 1))?;
            scrape.series.push(series);
        }
        Ok(scrape)
    }

    /// The distinct metric names (histogram parts under their own names).
    pub fn names(&self) -> BTreeSet<String> {
        self.series.iter().map(|s| s.name.clone()).collect()
    }

    pub fn all(&self, name: &str) -> Vec<&Series> {
        self.series.iter().filter(|s| s.name == name).collect()
    }

    /// The value of the one series called `name` (none or several: `None`).
    pub fn value(&self, name: &str) -> Option<f64> {
        match self.all(name).as_slice() {
            [one] => Some(one.value),
            _ => None,
        }
    }

    /// Series that repeat a (name, label set) pair: must be empty.
    pub fn duplicates(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.series
            .iter()
            .map(|s| s.selector(&[]))
            .filter(|key| !seen.insert(key.clone()))
            .collect()
    }
}

fn parse_line(line: &str) -> Option<Series> {
    let (name_end, labels, rest) = match line.find('{') {
        Some(open) if open < line.find(' ').unwrap_or(usize::MAX) => {
            let (labels, after) = parse_labels(&line[open + 1..])?;
            (open, labels, after)
        }
        _ => {
            let space = line.find(' ')?;
            (space, BTreeMap::new(), &line[space..])
        }
    };
    let name = line[..name_end].to_string();
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Series {
        name,
        labels,
        value,
    })
}

/// Labels up to the closing brace; returns them and what follows.
fn parse_labels(text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'}' {
            return Some((labels, &text[i + 1..]));
        }
        let eq = text[i..].find('=')? + i;
        let key = text[i..eq].trim().to_string();
        if bytes.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut value = String::new();
        let mut j = eq + 2;
        loop {
            match *bytes.get(j)? {
                b'\\' => {
                    match *bytes.get(j + 1)? {
                        b'n' => value.push('\n'),
                        other => value.push(other as char),
                    }
                    j += 2;
                }
                b'"' => break,
                _ => {
                    let ch = text[j..].chars().next()?;
                    value.push(ch);
                    j += ch.len_utf8();
                }
            }
        }
        labels.insert(key, value);
        i = j + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_labels_values_and_types() {
        let text = "# HELP a help\n# TYPE a gauge\na 1\nb{x=\"1\",y=\"q\\\"uote\"} 2.5\nc{} NaN\n";
        let s = Scrape::parse(text).unwrap();
        assert_eq!(s.value("a"), Some(1.0));
        assert_eq!(s.all("b")[0].labels["y"], "q\"uote");
        assert_eq!(s.types["a"], "gauge");
        assert!(s.value("c").unwrap().is_nan());
        assert_eq!(
            s.all("b")[0].selector(&[("job", "j")]),
            "b{job=\"j\",x=\"1\",y=\"q\\\"uote\"}"
        );
        assert!(s.duplicates().is_empty());
        let dup = Scrape::parse("a{x=\"1\"} 1\na{x=\"1\"} 2\n").unwrap();
        assert_eq!(dup.duplicates().len(), 1);
    }
}

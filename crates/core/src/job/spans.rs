//! Where keys are in the file: byte spans of keys and values, turned into lines and columns.

use std::ops::Range;

/// One key of the document with its place: used to name the key of a serde error (which only
/// has a byte span) and to give stage-2 problems a line and column.
pub(super) struct KeyPlace {
    pub(super) path: String,
    /// How many tables deep the key is (0 for a top-level key).
    depth: usize,
    key: Range<usize>,
    pub(super) value: Range<usize>,
}

/// The places of every key, nested tables included.
pub(super) fn key_places(text: &str) -> Vec<KeyPlace> {
    let mut places = Vec::new();
    if let Ok(document) = toml::de::DeTable::parse(text) {
        collect_places(document.get_ref(), "", 0, &mut places);
    }
    places
}

fn collect_places(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    depth: usize,
    places: &mut Vec<KeyPlace>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            collect_places(inner, &path, depth + 1, places);
        }
        places.push(KeyPlace {
            path,
            depth,
            key: key.span(),
            value: value.span(),
        });
    }
}

/// The deepest key whose name or value holds `span`.
pub(super) fn key_at(places: &[KeyPlace], span: &Range<usize>) -> Option<String> {
    let holds = |outer: &Range<usize>| outer.start <= span.start && span.end <= outer.end;
    places
        .iter()
        .filter(|place| holds(&place.key) || holds(&place.value))
        .max_by_key(|place| place.depth)
        .map(|place| place.path.clone())
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Rewrites Rust type names in serde messages into words.
pub(super) fn humanize(message: &str) -> String {
    message
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected usize", "expected a whole number, 0 or more")
        .replace("expected u64", "expected a whole number, 0 or more")
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected a boolean", "expected true or false")
}

//! Protobuf text format: loading with the checks our config files need, and printing in the classic
//! syntax that upstream's C parser (protobuf-c-text) reads back.
//!
//! Loading parses with prost-reflect, then enforces proto2 `required` fields (prost-reflect does
//! not), then transcodes into the prost type. Every error carries the line and column it refers to
//! and, where one is involved, the field's name. Unknown fields and fields set twice are errors.
//!
//! Printing writes one field per line in field-number order, nested messages as `name { … }`, and
//! repeated fields as one line per element (never the `[a, b]` list syntax, which protobuf-c-text
//! rejects). Strings are escaped with C escapes; bytes outside printable ASCII become octal escapes.

use std::fmt::{self, Write as _};

use prost::Message as _;
use prost_reflect::{
    Cardinality, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage, Value,
};

use super::descriptors;

/// A protobuf text document that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {}{message}", field.as_ref().map(|f| format!("field '{f}': ")).unwrap_or_default())]
pub struct TextError {
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// The field involved, as a path such as `vnet_configs[1].if_name`, when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Looks up the reflection descriptor of a generated message type.
pub fn descriptor_of<T: prost::Name>() -> MessageDescriptor {
    descriptors()
        .get_message_by_name(&T::full_name())
        .expect("every generated message is in the descriptor pool")
}

/// Loads a protobuf text document into `T`, enforcing required fields.
pub fn parse<T: prost::Message + prost::Name + Default>(input: &[u8]) -> Result<T, TextError> {
    parse_lenient(input, &[]).map(|(msg, _)| msg)
}

/// Loads like [`parse`], except that the top-level required fields named in `optional` may be
/// missing: they keep their default value, and the names of those missing are returned (in field
/// order) so the caller can warn. Required fields of nested messages are always enforced.
pub fn parse_lenient<T: prost::Message + prost::Name + Default>(
    input: &[u8],
    optional: &[&str],
) -> Result<(T, Vec<String>), TextError> {
    let text = std::str::from_utf8(input).map_err(|e| {
        let (line, column) = line_col(
            &String::from_utf8_lossy(&input[..e.valid_up_to()]),
            e.valid_up_to(),
        );
        TextError {
            line,
            column,
            field: None,
            message: "text is not valid UTF-8".into(),
        }
    })?;
    check_depth(text)?;
    let desc = descriptor_of::<T>();
    let dynamic = DynamicMessage::parse_text_format(desc, text).map_err(|e| parse_error(text, &e))?;
    let mut missing = Vec::new();
    check_required(&dynamic, text, optional, &mut missing)?;
    let msg = T::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| TextError {
        line: 1,
        column: 1,
        field: None,
        message: format!("cannot convert the parsed message: {e}"),
    })?;
    Ok((msg, missing))
}

/// Prints a message in classic protobuf text syntax (see the module documentation).
pub fn print<T: prost::Message + prost::Name>(msg: &T) -> String {
    let dynamic = to_dynamic(msg);
    let mut out = String::new();
    write_message(&mut out, &dynamic, 0).expect("writing to a String cannot fail");
    out
}

/// Converts a generated message into a reflection message (for printing or JSON).
pub fn to_dynamic<T: prost::Message + prost::Name>(msg: &T) -> DynamicMessage {
    DynamicMessage::decode(descriptor_of::<T>(), msg.encode_to_vec().as_slice())
        .expect("a message encoded by prost decodes with its own descriptor")
}

/// Converts a generated message to JSON with the proto field names and enum value names.
pub fn to_json<T: prost::Message + prost::Name>(msg: &T) -> serde_json::Value {
    let dynamic = to_dynamic(msg);
    let opts = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .unwrap_or(serde_json::Value::Null)
}

/// Deepest nesting of `{ … }` / `< … >` blocks a document may have. Our configs nest two levels at
/// most. The limit exists because prost-reflect parses the body of an Any expansion
/// (`[type.googleapis.com/cml.ContainerConfig] { … }`) recursively before it checks that the field
/// is an `Any`, without a depth limit: 100 000 nested expansions overflow the stack, which aborts
/// the daemon.
pub const MAX_DEPTH: usize = 32;

/// Refuses a document whose blocks nest deeper than [`MAX_DEPTH`], pointing at the first opening
/// too many. Strings and comments are skipped the way the lexer skips them; up to the first lexer
/// or parser error, the depth counted here is the parser's recursion depth.
fn check_depth(text: &str) -> Result<(), TextError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'{' | b'<' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let (line, column) = line_col(text, i);
                    return Err(TextError {
                        line,
                        column,
                        field: None,
                        message: format!("message blocks nested deeper than {MAX_DEPTH} levels"),
                    });
                }
            }
            b'}' | b'>' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn parse_error(text: &str, err: &prost_reflect::text_format::ParseError) -> TextError {
    use miette::Diagnostic as _;
    let offset = err
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| l.offset())
        .unwrap_or(text.len());
    let (line, column) = line_col(text, offset);
    let message = err.to_string();
    // Errors about a field name already name it; for value errors, name the field being set.
    let field = if message.starts_with("field '") || message.contains("' is already set") {
        None
    } else {
        field_before(text, offset)
    };
    TextError {
        line,
        column,
        field,
        message,
    }
}

/// The identifier of the `name:` that precedes `offset`, if the error sits in a field's value.
fn field_before(text: &str, offset: usize) -> Option<String> {
    let before = text[..floor_char_boundary(text, offset)].trim_end();
    let before = before.strip_suffix(':')?.trim_end();
    let ident: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!ident.is_empty()).then_some(ident)
}

/// Checks required fields; a missing top-level one named in `optional` is pushed to `missing`
/// instead of being an error.
fn check_required(
    msg: &DynamicMessage,
    text: &str,
    optional: &[&str],
    missing: &mut Vec<String>,
) -> Result<(), TextError> {
    for field in msg.descriptor().fields() {
        if field.cardinality() == Cardinality::Required
            && !msg.has_field(&field)
            && optional.contains(&field.name())
        {
            missing.push(field.name().to_owned());
        }
    }
    let mut path = Vec::new();
    check_required_at(msg, text, &mut path, optional)
}

fn check_required_at(
    msg: &DynamicMessage,
    text: &str,
    path: &mut Vec<(String, usize)>,
    optional: &[&str],
) -> Result<(), TextError> {
    let desc = msg.descriptor();
    for field in desc.fields() {
        let excused = path.is_empty() && optional.contains(&field.name());
        if field.cardinality() == Cardinality::Required && !msg.has_field(&field) && !excused {
            let offset = locate_block(text, path).unwrap_or(text.len());
            let (line, column) = line_col(text, offset);
            let mut name = path_string(path);
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(field.name());
            return Err(TextError {
                line,
                column,
                field: Some(name),
                message: format!("missing required field in {}", desc.name()),
            });
        }
        if !matches!(field.kind(), Kind::Message(_)) || !msg.has_field(&field) {
            continue;
        }
        match &*msg.get_field(&field) {
            Value::Message(m) => {
                path.push((field.name().to_owned(), 0));
                check_required_at(m, text, path, optional)?;
                path.pop();
            }
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Message(m) = item {
                        path.push((field.name().to_owned(), i));
                        check_required_at(m, text, path, optional)?;
                        path.pop();
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn path_string(path: &[(String, usize)]) -> String {
    path.iter()
        .map(|(n, i)| format!("{n}[{i}]"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Finds the byte offset of the nested message block named by `path` (each element: field name and
/// index among the blocks of that name at that level). `None` for the top level or when the block
/// is written in a syntax this small scanner does not follow (the caller then points at the end).
fn locate_block(text: &str, path: &[(String, usize)]) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    // Stack of (matched-so-far flag, per-name block counters) for each open block.
    let mut depth_matches: Vec<bool> = vec![true];
    let mut counters: Vec<std::collections::HashMap<String, usize>> = vec![Default::default()];
    let mut last_ident: Option<(String, usize)> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                last_ident = None;
            }
            b'{' | b'<' => {
                let depth = depth_matches.len() - 1;
                let parent_matches = depth_matches[depth];
                let mut here = false;
                if let Some((name, start)) = last_ident.take() {
                    let n = counters[depth].entry(name.clone()).or_insert(0);
                    let idx = *n;
                    *n += 1;
                    if parent_matches && depth < path.len() && path[depth].0 == name && path[depth].1 == idx {
                        if depth + 1 == path.len() {
                            return Some(start);
                        }
                        here = true;
                    }
                }
                depth_matches.push(here);
                counters.push(Default::default());
            }
            b'}' | b'>' => {
                if depth_matches.len() > 1 {
                    depth_matches.pop();
                    counters.pop();
                }
                last_ident = None;
            }
            b':' | b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                last_ident = Some((text[start..i].to_owned(), start));
                continue;
            }
            _ => last_ident = None,
        }
        i += 1;
    }
    None
}

fn write_message(out: &mut String, msg: &DynamicMessage, indent: usize) -> fmt::Result {
    let mut fields: Vec<FieldDescriptor> = msg.descriptor().fields().collect();
    fields.sort_by_key(FieldDescriptor::number);
    for field in fields {
        if !msg.has_field(&field) {
            continue;
        }
        match &*msg.get_field(&field) {
            Value::List(items) => {
                for item in items {
                    write_field(out, &field, item, indent)?;
                }
            }
            value => write_field(out, &field, value, indent)?,
        }
    }
    Ok(())
}

fn write_field(out: &mut String, field: &FieldDescriptor, value: &Value, indent: usize) -> fmt::Result {
    let pad = "  ".repeat(indent);
    match value {
        Value::Message(m) => {
            writeln!(out, "{pad}{} {{", field.name())?;
            write_message(out, m, indent + 1)?;
            writeln!(out, "{pad}}}")
        }
        other => {
            write!(out, "{pad}{}: ", field.name())?;
            write_scalar(out, field, other)?;
            out.push('\n');
            Ok(())
        }
    }
}

fn write_scalar(out: &mut String, field: &FieldDescriptor, value: &Value) -> fmt::Result {
    match value {
        Value::Bool(b) => write!(out, "{b}"),
        Value::I32(v) => write!(out, "{v}"),
        Value::I64(v) => write!(out, "{v}"),
        Value::U32(v) => write!(out, "{v}"),
        Value::U64(v) => write!(out, "{v}"),
        Value::F32(v) => write!(out, "{v:?}"),
        Value::F64(v) => write!(out, "{v:?}"),
        Value::String(s) => write_quoted(out, s.as_bytes()),
        Value::Bytes(b) => write_quoted(out, b),
        Value::EnumNumber(n) => match field.kind() {
            Kind::Enum(e) => match e.get_value(*n) {
                Some(v) => out.write_str(v.name()),
                None => write!(out, "{n}"),
            },
            _ => write!(out, "{n}"),
        },
        Value::Message(_) | Value::List(_) | Value::Map(_) => Ok(()),
    }
}

fn write_quoted(out: &mut String, bytes: &[u8]) -> fmt::Result {
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => write!(out, "\\{b:03o}")?,
        }
    }
    out.push('"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pb::{ContainerConfig, DeviceConfig, GuestOsConfig};

    const GOOD: &str = "name: \"a\"\nguest_os: \"busybox\"\ncolor: 0\ntoken_type: NONE\n\
        vnet_configs {\n  if_name: \"eth0\"\n  configure: true\n}\ninit_env: \"A=1\"\ninit_env: \"B=2\"\n";

    #[test]
    fn round_trip_prints_classic_syntax() {
        let c: ContainerConfig = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(c.name, "a");
        let printed = print(&c);
        assert!(
            printed.contains("init_env: \"A=1\"\ninit_env: \"B=2\"\n"),
            "{printed}"
        );
        assert!(
            printed.contains("vnet_configs {\n  if_name: \"eth0\"\n  configure: true\n}\n"),
            "{printed}"
        );
        assert!(!printed.contains('['));
        let again: ContainerConfig = parse(printed.as_bytes()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn missing_required_top_level_field_is_named() {
        let e = parse::<ContainerConfig>(b"name: \"a\"\nguest_os: \"x\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("color"));
        assert_eq!((e.line, e.column), (3, 1));
    }

    #[test]
    fn lenient_fields_may_be_missing_at_the_top_level_only() {
        let (c, missing) =
            parse_lenient::<ContainerConfig>(b"name: \"a\"\nguest_os: \"x\"\n", &["color"]).unwrap();
        assert_eq!((c.color, missing), (0, vec!["color".to_owned()]));
        let (c, missing) =
            parse_lenient::<ContainerConfig>(b"name: \"a\"\nguest_os: \"x\"\ncolor: 7\n", &["color"])
                .unwrap();
        assert_eq!((c.color, missing), (7, Vec::<String>::new()));
        // Other required fields stay required.
        let e = parse_lenient::<ContainerConfig>(b"guest_os: \"x\"\n", &["color"]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        // A nested field of the same name is not excused.
        let e = parse_lenient::<ContainerConfig>(
            b"name: \"a\"\nguest_os: \"x\"\nvnet_configs { if_name: \"e\" }\n",
            &["color", "configure"],
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vnet_configs[0].configure"));
    }

    #[test]
    fn missing_required_nested_field_points_at_its_block() {
        let text = "name: \"a\"\nguest_os: \"x\"\ncolor: 1\nvnet_configs { if_name: \"e\" configure: true }\n\
                    vnet_configs {\n  if_name: \"f\"\n}\n";
        let e = parse::<ContainerConfig>(text.as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vnet_configs[1].configure"));
        assert_eq!((e.line, e.column), (5, 1));
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse::<ContainerConfig>(b"name: \"a\"\n  colour: 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(e.message.contains("colour"), "{e}");
        let e = parse::<ContainerConfig>(b"name: \"a\"\nram_limit: \"lots\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert_eq!(e.field.as_deref(), Some("ram_limit"));
        let e = parse::<ContainerConfig>(b"name: \"a\"\nname: \"b\"\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "[type.googleapis.com/cml.ContainerConfig] {".repeat(100_000);
        let e = parse::<ContainerConfig>(deep.as_bytes()).unwrap_err();
        assert_eq!((e.line, e.column), (1, 33 * 43));
        assert!(e.message.contains("nested deeper"), "{e}");
        // Braces in strings and comments do not count.
        let text = format!("name: \"{}\"\n# {}\n", "{".repeat(100), "<".repeat(100));
        let e = parse::<ContainerConfig>(text.as_bytes()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("guest_os"));
    }

    #[test]
    fn invalid_utf8_is_reported() {
        let e = parse::<ContainerConfig>(b"name: \"a\"\nguest_os: \"\xff\"\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("UTF-8"));
    }

    #[test]
    fn device_conf_needs_no_field() {
        let d: DeviceConfig = parse(b"").unwrap();
        assert_eq!(d.hostedmode, None);
        assert!(d.signed_configs());
    }

    #[test]
    fn strings_are_escaped_for_c_parsers() {
        let c = ContainerConfig {
            name: "a\"b\\c\nd\u{e9}".into(),
            guest_os: "x".into(),
            ..Default::default()
        };
        let printed = print(&c);
        assert!(printed.contains(r#"name: "a\"b\\c\nd\303\251""#), "{printed}");
        let again: ContainerConfig = parse(printed.as_bytes()).unwrap();
        assert_eq!(again.name, c.name);
    }

    #[test]
    fn guestos_description_is_required() {
        let e = parse::<GuestOsConfig>(b"name: \"x\" hardware: \"x86\" version: 1").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("description"));
    }
}

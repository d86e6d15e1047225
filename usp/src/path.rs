//! The data model path grammar of TR-369 ("Path Names"): `Device.A.{i}.B`, instance numbers,
//! `*` wildcards, search expressions (`[Status=="Active"&&Name!="x"]`, operators `==` `!=` `~=`
//! `<` `>` `<=` `>=`, whitespace around the operator tolerated, R-ARC.9a), partial paths ending in
//! `.`, command (`X()`) and event (`X!`) names, and `{i}` templates (supported data model paths).
//!
//! Parsing is bounded (length, segment count, name length, expressions per search) and every
//! failure is a USP 7008 "Invalid path syntax" naming what was wrong.

use std::fmt;

use crate::errors::{UspError, INVALID_PATH_SYNTAX};

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most segments (names, instances, wildcards, searches) in one path.
pub const MAX_SEGMENTS: usize = 32;
/// Longest object, parameter, command or event name.
pub const MAX_NAME_LEN: usize = 64;
/// Most `&&`-joined expressions in one search segment.
pub const MAX_EXPRESSIONS: usize = 8;

/// One step of an object path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object name (`SoftwareModules`).
    Name(String),
    /// An instance number (`3`); never 0.
    Instance(u32),
    /// `*`: every instance.
    Wildcard,
    /// `[expr&&expr]`: the instances whose parameters satisfy every expression.
    Search(Vec<Expression>),
    /// `{i}`: a multi-instance placeholder, as supported data model paths write it.
    Template,
}

/// `param op value` inside a search segment. `param` may be a relative path (`Stats.Count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// The parameter compared, relative to the instance (`Status`, `Stats.Count`).
    pub param: String,
    /// The comparison.
    pub op: Operator,
    /// The literal, unquoted and unescaped (`"Active"` is stored as `Active`, `"a%22b"` as
    /// `a"b`).
    pub value: String,
    /// The literal was a quoted string: compared as text. An unquoted one (number, boolean,
    /// dateTime) is compared as a value: `1` equals `true`, `0123` equals `123`.
    pub quoted: bool,
}

/// A search expression's operator (TR-369 "Searching with Expressions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `==`: equal.
    Eq,
    /// `!=`: not equal.
    Ne,
    /// `~=`: a comma-separated list holds the element.
    Contains,
    /// `<`: less than (numbers, or UTC dateTimes).
    Lt,
    /// `>`: greater than (numbers, or UTC dateTimes).
    Gt,
    /// `<=`: less than or equal (numbers, or UTC dateTimes).
    Le,
    /// `>=`: greater than or equal (numbers, or UTC dateTimes).
    Ge,
}

impl Operator {
    /// The operator as written in a path (`==`, `~=`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
            Operator::Contains => "~=",
            Operator::Lt => "<",
            Operator::Gt => ">",
            Operator::Le => "<=",
            Operator::Ge => ">=",
        }
    }

    /// Compares a parameter's current value with a quoted (text) literal. `==`/`!=` compare
    /// text, `~=` looks for an element of a comma-separated list; the ordering operators compare
    /// numbers and are false when either side is not one.
    pub fn holds(self, actual: &str, expected: &str) -> bool {
        self.compare(actual, expected, true)
    }

    fn compare(self, actual: &str, expected: &str, quoted: bool) -> bool {
        match self {
            Operator::Eq => same_value(actual, expected, quoted),
            Operator::Ne => !same_value(actual, expected, quoted),
            Operator::Contains => actual
                .split(',')
                .any(|item| same_value(item.trim(), expected, quoted)),
            _ => {
                let (Ok(a), Ok(e)) = (actual.parse::<f64>(), expected.parse::<f64>()) else {
                    // dateTime in UTC (TR-106): same-shaped RFC 3339 strings order as text.
                    if !quoted && is_datetime(actual) && is_datetime(expected) {
                        return match self {
                            Operator::Lt => actual < expected,
                            Operator::Gt => actual > expected,
                            Operator::Le => actual <= expected,
                            _ => actual >= expected,
                        };
                    }
                    return false;
                };
                match self {
                    Operator::Lt => a < e,
                    Operator::Gt => a > e,
                    Operator::Le => a <= e,
                    _ => a >= e,
                }
            }
        }
    }
}

/// Equality as TR-369 "Searching with Expressions" asks: literals are converted before
/// comparing, so an unquoted `123`, `+123` and `0123` are equal, and so are `1` and `true`.
fn same_value(actual: &str, expected: &str, quoted: bool) -> bool {
    if actual == expected {
        return true;
    }
    if quoted {
        return false;
    }
    let boolean = |s: &str| match s {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    };
    match (actual.parse::<f64>(), expected.parse::<f64>()) {
        (Ok(a), Ok(e)) => a == e,
        _ => matches!((boolean(actual), boolean(expected)), (Some(a), Some(e)) if a == e),
    }
}

/// `2021-06-06T08:00:00Z`: a TR-106 dateTime in UTC, as an unquoted search constant.
fn is_datetime(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b.len() <= 40
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && s.ends_with('Z')
        && b.iter().all(|c| c.is_ascii_digit() || b"-:.TZ".contains(c))
}

impl Expression {
    /// Whether a parameter's current value satisfies this expression (a quoted literal
    /// compares as text, an unquoted one as a value; see [`Operator::holds`]).
    pub fn holds(&self, actual: &str) -> bool {
        self.op.compare(actual, &self.value, self.quoted)
    }
}

/// What the path ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// An object path: a partial path ending in `.`, or one ending in an instance selector.
    Object,
    /// A parameter name (the last segment, no trailing `.`).
    Param(String),
    /// `Name()` (stored without the parentheses).
    Command(String),
    /// `Name!` (stored without the `!`).
    Event(String),
}

/// A parsed path: the object segments from `Device` on, then the leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// The object segments, `Device` first.
    pub segments: Vec<Segment>,
    /// What follows the last object segment.
    pub leaf: Leaf,
}

fn syntax(path: &str, why: impl fmt::Display) -> UspError {
    let shown: String = path.chars().take(128).collect();
    let more = if path.chars().count() > 128 {
        "..."
    } else {
        ""
    };
    UspError::new(INVALID_PATH_SYNTAX, format!("{shown:?}{more}: {why}"))
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s.len() <= MAX_NAME_LEN
}

/// Splits at `.` outside brackets and quotes. A trailing `.` gives a last empty piece.
fn split_top(path: &str) -> Result<Vec<&str>, UspError> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut depth = 0u8;
    let mut quoted = false;
    for (i, c) in path.char_indices() {
        match c {
            '"' if depth > 0 => quoted = !quoted,
            '[' if !quoted => {
                if depth > 0 {
                    return Err(syntax(path, "nested '[' in a search expression"));
                }
                depth = 1;
            }
            ']' if !quoted => {
                if depth == 0 {
                    return Err(syntax(path, "']' without '['"));
                }
                depth = 0;
            }
            '.' if depth == 0 => {
                pieces.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 || quoted {
        return Err(syntax(path, "unterminated search expression"));
    }
    pieces.push(&path[start..]);
    Ok(pieces)
}

fn parse_instance(path: &str, s: &str) -> Result<u32, UspError> {
    match s.parse::<u32>() {
        Ok(0) => Err(syntax(path, "instance number 0 (numbers start at 1)")),
        Ok(n) => Ok(n),
        Err(_) => Err(syntax(path, format!("instance number {s:?} out of range"))),
    }
}

fn parse_search(path: &str, inner: &str) -> Result<Vec<Expression>, UspError> {
    let mut exprs = Vec::new();
    // Split at `&&` outside quotes.
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b'&' if !quoted && bytes.get(i + 1) == Some(&b'&') => {
                parts.push(&inner[start..i]);
                i += 2;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&inner[start..]);
    if parts.len() > MAX_EXPRESSIONS {
        return Err(syntax(
            path,
            format!("more than {MAX_EXPRESSIONS} expressions in one search"),
        ));
    }
    for part in parts {
        exprs.push(parse_expression(path, part)?);
    }
    Ok(exprs)
}

fn parse_expression(path: &str, text: &str) -> Result<Expression, UspError> {
    // The operator is the first one outside the parameter name (names hold no operator chars).
    // Whitespace on either side of it is tolerated (R-ARC.9a).
    let text = text.trim_matches(' ');
    let at = text
        .find(['=', '!', '<', '>', '~'])
        .ok_or_else(|| syntax(path, format!("search expression {text:?} has no operator")))?;
    let param = text[..at].trim_end_matches(' ');
    let rest = &text[at..];
    let (op, len) = if rest.starts_with("==") {
        (Operator::Eq, 2)
    } else if rest.starts_with("!=") {
        (Operator::Ne, 2)
    } else if rest.starts_with("~=") {
        (Operator::Contains, 2)
    } else if rest.starts_with("<=") {
        (Operator::Le, 2)
    } else if rest.starts_with(">=") {
        (Operator::Ge, 2)
    } else if rest.starts_with('<') {
        (Operator::Lt, 1)
    } else if rest.starts_with('>') {
        (Operator::Gt, 1)
    } else {
        return Err(syntax(path, format!("unknown operator in {text:?}")));
    };
    if param.is_empty() || !param.split('.').all(is_name) {
        return Err(syntax(
            path,
            format!("search parameter {param:?} is not a parameter name"),
        ));
    }
    let literal = rest[len..].trim_start_matches(' ');
    let quoted = literal.starts_with('"');
    let value = if let Some(q) = literal.strip_prefix('"') {
        let body = q
            .strip_suffix('"')
            .ok_or_else(|| syntax(path, format!("unterminated string in {text:?}")))?;
        if body.contains('"') {
            return Err(syntax(path, format!("stray quote in {text:?}")));
        }
        // A quote inside a string is written %22, and so a percent sign %25.
        body.replace("%22", "\"").replace("%25", "%")
    } else {
        // Unquoted literals are numbers, booleans or dateTimes.
        let ok = !literal.is_empty()
            && (literal == "true"
                || literal == "false"
                || literal.parse::<f64>().is_ok_and(|f| f.is_finite())
                || is_datetime(literal));
        if !ok {
            return Err(syntax(
                path,
                format!("value {literal:?} must be quoted, a number, a boolean or a dateTime"),
            ));
        }
        literal.to_string()
    };
    Ok(Expression {
        param: param.to_string(),
        op,
        value,
        quoted,
    })
}

fn parse_selector(path: &str, piece: &str) -> Result<Option<Segment>, UspError> {
    if piece == "*" {
        return Ok(Some(Segment::Wildcard));
    }
    if piece == "{i}" {
        return Ok(Some(Segment::Template));
    }
    if let Some(inner) = piece.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| syntax(path, format!("text after ']' in {piece:?}")))?;
        return Ok(Some(Segment::Search(parse_search(path, inner)?)));
    }
    if !piece.is_empty() && piece.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Some(Segment::Instance(parse_instance(path, piece)?)));
    }
    Ok(None)
}

impl Path {
    /// Parses a path as a USP message carries it.
    pub fn parse(path: &str) -> Result<Path, UspError> {
        if path.is_empty() {
            return Err(syntax(path, "empty path"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(syntax(
                path,
                format!("longer than {MAX_PATH_LEN} bytes ({})", path.len()),
            ));
        }
        if path.chars().any(|c| c.is_control()) {
            return Err(syntax(path, "control character"));
        }
        let mut pieces = split_top(path)?;
        let partial = pieces.last() == Some(&"");
        if partial {
            pieces.pop();
        }
        if pieces.len() > MAX_SEGMENTS {
            return Err(syntax(path, format!("more than {MAX_SEGMENTS} segments")));
        }
        if pieces.first() != Some(&"Device") || (pieces.len() == 1 && !partial) {
            return Err(syntax(path, "does not start with \"Device.\""));
        }
        let mut segments = Vec::with_capacity(pieces.len());
        segments.push(Segment::Name("Device".to_string()));
        let mut leaf = Leaf::Object;
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate().skip(1) {
            if piece.is_empty() {
                return Err(syntax(path, "empty segment (\"..\")"));
            }
            if let Some(sel) = parse_selector(path, piece)? {
                segments.push(sel);
                continue;
            }
            if i == last && !partial {
                if let Some(cmd) = piece.strip_suffix("()") {
                    if is_name(cmd) {
                        leaf = Leaf::Command(cmd.to_string());
                        continue;
                    }
                } else if let Some(ev) = piece.strip_suffix('!') {
                    if is_name(ev) {
                        leaf = Leaf::Event(ev.to_string());
                        continue;
                    }
                } else if is_name(piece) {
                    leaf = Leaf::Param(piece.to_string());
                    continue;
                }
            }
            if !is_name(piece) {
                return Err(syntax(path, format!("{piece:?} is not a valid name")));
            }
            segments.push(Segment::Name(piece.to_string()));
        }
        Ok(Path { segments, leaf })
    }

    /// True when no segment is a wildcard or a search (the path names at most one thing).
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Name(_) | Segment::Instance(_)))
    }

    /// The object part, written as a partial path (`Device.A.1.`).
    pub fn object_path(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            write_segment(&mut s, seg);
            s.push('.');
        }
        s
    }
}

fn write_segment(s: &mut String, seg: &Segment) {
    use std::fmt::Write;
    match seg {
        Segment::Name(n) => s.push_str(n),
        Segment::Instance(i) => {
            let _ = write!(s, "{i}");
        }
        Segment::Wildcard => s.push('*'),
        Segment::Template => s.push_str("{i}"),
        Segment::Search(exprs) => {
            s.push('[');
            for (k, e) in exprs.iter().enumerate() {
                if k > 0 {
                    s.push_str("&&");
                }
                if e.quoted {
                    let escaped = e.value.replace('%', "%25").replace('"', "%22");
                    let _ = write!(s, "{}{}\"{escaped}\"", e.param, e.op.as_str());
                } else {
                    let _ = write!(s, "{}{}{}", e.param, e.op.as_str(), e.value);
                }
            }
            s.push(']');
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let obj = self.object_path();
        match &self.leaf {
            Leaf::Object => f.write_str(&obj),
            Leaf::Param(p) => write!(f, "{obj}{p}"),
            Leaf::Command(c) => write!(f, "{obj}{c}()"),
            Leaf::Event(e) => write!(f, "{obj}{e}!"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Segment {
        Segment::Name(s.into())
    }

    #[test]
    fn partial_and_parameter_paths() {
        let p = Path::parse("Device.SoftwareModules.").unwrap();
        assert_eq!(p.segments, vec![name("Device"), name("SoftwareModules")]);
        assert_eq!(p.leaf, Leaf::Object);
        let p = Path::parse("Device.SoftwareModules.DeploymentUnit.3.UUID").unwrap();
        assert_eq!(
            p.segments,
            vec![
                name("Device"),
                name("SoftwareModules"),
                name("DeploymentUnit"),
                Segment::Instance(3)
            ]
        );
        assert_eq!(p.leaf, Leaf::Param("UUID".into()));
        assert!(p.is_exact());
        assert_eq!(
            p.to_string(),
            "Device.SoftwareModules.DeploymentUnit.3.UUID"
        );
        // An instance at the end is an object path, dot or not.
        let p = Path::parse("Device.LocalAgent.Subscription.2").unwrap();
        assert_eq!(p.leaf, Leaf::Object);
        assert_eq!(p.object_path(), "Device.LocalAgent.Subscription.2.");
    }

    #[test]
    fn commands_events_wildcards_templates() {
        let p = Path::parse("Device.SoftwareModules.InstallDU()").unwrap();
        assert_eq!(p.leaf, Leaf::Command("InstallDU".into()));
        let p = Path::parse("Device.SoftwareModules.DUStateChange!").unwrap();
        assert_eq!(p.leaf, Leaf::Event("DUStateChange".into()));
        let p = Path::parse("Device.SoftwareModules.ExecutionUnit.*.Status").unwrap();
        assert_eq!(p.segments[3], Segment::Wildcard);
        assert!(!p.is_exact());
        let p = Path::parse("Device.SoftwareModules.ExecEnv.{i}.Reset()").unwrap();
        assert_eq!(p.segments[3], Segment::Template);
        assert_eq!(p.to_string(), "Device.SoftwareModules.ExecEnv.{i}.Reset()");
    }

    #[test]
    fn search_expressions() {
        let p = Path::parse(
            "Device.SoftwareModules.ExecutionUnit.[Status==\"Active\"&&Name!=\"a.b]\"].EUID",
        )
        .unwrap();
        let Segment::Search(exprs) = &p.segments[3] else {
            panic!("{p:?}")
        };
        assert_eq!(exprs.len(), 2);
        assert_eq!(exprs[0].param, "Status");
        assert_eq!(exprs[0].op, Operator::Eq);
        assert_eq!(exprs[0].value, "Active");
        assert_eq!(exprs[1].op, Operator::Ne);
        assert_eq!(exprs[1].value, "a.b]");
        assert!(exprs[0].holds("Active"));
        assert!(!exprs[0].holds("Idle"));
        assert!(exprs[1].holds("other"));
        let p = Path::parse("Device.X.[MemoryInUse>=1024].Name").unwrap();
        let Segment::Search(e) = &p.segments[2] else {
            panic!()
        };
        assert!(e[0].holds("2048"));
        assert!(!e[0].holds("12"));
        assert!(!e[0].holds("many"));
        assert_eq!(p.to_string(), "Device.X.[MemoryInUse>=1024].Name");
    }

    /// TR-369 "Searching with Expressions": whitespace around the operator (R-ARC.9a), `~=`,
    /// %22 and %25 in strings, and constants compared as values of their type.
    #[test]
    fn search_operators_escapes_and_typed_constants() {
        let exprs = |p: &str| -> Vec<Expression> {
            let p = Path::parse(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            match p.segments.into_iter().find_map(|s| match s {
                Segment::Search(e) => Some(e),
                _ => None,
            }) {
                Some(e) => e,
                None => panic!("no search"),
            }
        };
        let e = exprs("Device.X.[Type == \"Normal\" && Count >= 2].");
        assert_eq!(
            (e[0].param.as_str(), e[0].value.as_str()),
            ("Type", "Normal")
        );
        assert_eq!((e[1].param.as_str(), e[1].op), ("Count", Operator::Ge));
        assert!(e[0].holds("Normal") && e[1].holds("3") && !e[1].holds("1"));

        let e = exprs("Device.X.[Capabilities~=\"IPv6Firewall\"].");
        assert_eq!(e[0].op, Operator::Contains);
        assert!(e[0].holds("IPv4Firewall,IPv6Firewall"));
        assert!(e[0].holds("IPv6Firewall"));
        assert!(!e[0].holds("IPv6FirewallX,Other") && !e[0].holds(""));
        let e = exprs("Device.X.[SampleSeconds~=5].");
        assert!(e[0].holds("1, 05,10") && !e[0].holds("15,50"));

        let e = exprs("Device.X.[Name==\"say %22hi%22 100%25\"].");
        assert_eq!(e[0].value, "say \"hi\" 100%");
        assert!(e[0].holds("say \"hi\" 100%"));
        let p = Path::parse("Device.X.[Name==\"a%22b%25\"].").unwrap();
        assert_eq!(p.to_string(), "Device.X.[Name==\"a%22b%25\"].");

        let e = exprs("Device.X.[Enable==1&&Port==0123&&Flag!=false].");
        assert!(e[0].holds("true") && e[0].holds("1") && !e[0].holds("false"));
        assert!(e[1].holds("123") && e[1].holds("+123") && !e[1].holds("124"));
        assert!(e[2].holds("true") && !e[2].holds("0"));
        // A quoted constant is a string: compared as text.
        let e = exprs("Device.X.[Name==\"1\"].");
        assert!(e[0].holds("1") && !e[0].holds("true") && !e[0].holds("01"));

        let e = exprs("Device.X.[CreationDate<2021-06-06T08:00:00Z].");
        assert!(e[0].holds("2021-06-05T23:59:59Z") && !e[0].holds("2021-06-06T08:00:00Z"));
        assert!(Path::parse("Device.X.[A~\"x\"].").is_err());
    }

    #[test]
    fn bad_syntax_is_7008() {
        for bad in [
            "",
            "Device",
            "Other.Thing.",
            "Device..X",
            "Device.0.",
            "Device.X.0.",
            "Device.X.99999999999.",
            "Device.X.[Status==Active].",
            "Device.X.[Status=\"Active\"].",
            "Device.X.[Status==\"Active\".",
            "Device.X.[==\"a\"].",
            "Device.X.[A==1]B.",
            "Device.X.Reset().Y",
            "Device.X.Ev!.",
            "Device.9X.",
            "Device.X.Y Z",
            "Device.X.\nY",
        ] {
            let e = Path::parse(bad).expect_err(bad);
            assert_eq!(e.code, INVALID_PATH_SYNTAX, "{bad:?}: {e}");
        }
    }

    #[test]
    fn bounded() {
        let long = format!("Device.{}", "A.".repeat(MAX_PATH_LEN));
        let e = Path::parse(&long).unwrap_err();
        assert!(e.message.contains("longer than"), "{e}");
        let many = format!("Device.{}", "A.".repeat(MAX_SEGMENTS));
        assert!(Path::parse(&many).unwrap_err().message.contains("segments"));
        let wide = format!("Device.{}.", "N".repeat(MAX_NAME_LEN + 1));
        assert!(Path::parse(&wide).is_err());
        let exprs = ["A==1"; MAX_EXPRESSIONS + 1].join("&&");
        let e = Path::parse(&format!("Device.X.[{exprs}].")).unwrap_err();
        assert!(e.message.contains("expressions"), "{e}");
    }
}

//! Field-level checks shared by the Route and Backend compilers.

use http::{HeaderName, HeaderValue};

use crate::api::limits::{MANAGED_HEADERS, MAX_HOSTNAME_LEN};
use crate::model::{Diagnostic, ObjectRef, Reason};

/// Collects the findings about one object and remembers whether any rejects it.
pub struct Findings<'a> {
    id: &'a ObjectRef,
    out: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl<'a> Findings<'a> {
    pub fn new(id: &'a ObjectRef, out: &'a mut Vec<Diagnostic>) -> Self {
        Self { id, out, errors: 0 }
    }

    /// The object the findings are about.
    pub fn id(&self) -> &'a ObjectRef {
        self.id
    }

    pub fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(Diagnostic::error(self.id, field, Reason::Invalid, message));
    }

    pub fn not_supported(&mut self, field: impl Into<String>, what: &str) {
        self.push(Diagnostic::not_supported(self.id, field, what));
    }

    pub fn push(&mut self, d: Diagnostic) {
        if d.is_error() {
            self.errors += 1;
        }
        self.out.push(d);
    }

    /// Whether nothing so far rejects the object.
    pub fn ok(&self) -> bool {
        self.errors == 0
    }
}

/// A field path `{parent}.{field}[{index}]` (e.g. `spec.rules[0].matches[1]`), written only when
/// a finding names it: at 10,000 Routes, formatting every path up front was 40% of the compile.
pub struct Item<'a> {
    /// The path it is in (`spec` for a top-level list).
    pub parent: &'a dyn std::fmt::Display,
    /// The list's field name.
    pub field: &'static str,
    /// The position in the list.
    pub index: usize,
}

impl std::fmt::Display for Item<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}[{}]", self.parent, self.field, self.index)
    }
}

/// An enum value as users write it (its serde name), for messages.
pub fn wire_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// The last line of a regex error (the crate's message repeats the pattern above it).
pub fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text.lines().last().unwrap_or("").trim();
    format!(
        "invalid regular expression: {}",
        last.strip_prefix("error: ").unwrap_or(last)
    )
}

/// A DNS name as Gateway API allows it: lower-cased here; `*.` prefix only when `wildcard`.
/// The CRD schema checks the same (`api::limits::HOSTNAME_PATTERN` and a CEL rule).
pub fn hostname(raw: &str, wildcard: bool) -> Result<String, String> {
    let host = raw.to_ascii_lowercase();
    let bare = match host.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        Some(_) => return Err(format!("{raw:?}: a wildcard is not allowed here")),
        None => host.as_str(),
    };
    if bare.is_empty() || host.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "{raw:?}: a host name has 1 to {MAX_HOSTNAME_LEN} characters"
        ));
    }
    if bare.contains(':') {
        return Err(format!("{raw:?}: a host name has no port"));
    }
    for label in bare.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            let hint = if label.contains('*') {
                " (a wildcard must be the whole first label: *.example.com)"
            } else {
                ""
            };
            return Err(format!("{raw:?} is not a valid host name{hint}"));
        }
    }
    // Four numbers are an IPv4 address (or a mistyped one), never a host name. (The labels
    // are not empty, checked above: four of them are three dots.)
    if bare.bytes().filter(|&b| b == b'.').count() == 3
        && bare.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return Err(format!("{raw:?}: IP addresses are not host names"));
    }
    Ok(host)
}

/// A header name that a filter may set or remove.
pub fn modifiable_header(raw: &str) -> Result<HeaderName, String> {
    let name = header_name(raw)?;
    if MANAGED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "{raw:?} is managed by the proxy and cannot be modified here"
        ));
    }
    Ok(name)
}

/// Any valid header name.
pub fn header_name(raw: &str) -> Result<HeaderName, String> {
    thread_local! {
        /// The last name made: many Routes match or set the same header, and a name that is
        /// not a standard one is an allocation each time, a count increment when shared.
        static LAST: std::cell::RefCell<Option<HeaderName>> = const { std::cell::RefCell::new(None) };
    }
    let last = LAST.with_borrow(|last| last.as_ref().filter(|n| n.as_str() == raw).cloned());
    if let Some(name) = last {
        return Ok(name);
    }
    let name = HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| format!("{raw:?} is not a valid header name"))?;
    LAST.set(Some(name.clone()));
    Ok(name)
}

/// A valid header value.
pub fn header_value(raw: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(raw).map_err(|_| format!("{raw:?} is not a valid header value"))
}

/// A path for matching or rewriting: absolute, no query or fragment.
pub fn plain_path(raw: &str) -> Result<(), String> {
    if !raw.starts_with('/') {
        return Err(format!("{raw:?} must start with '/'"));
    }
    if let Some(c) = raw
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{raw:?} must not contain {c:?}"));
    }
    Ok(())
}

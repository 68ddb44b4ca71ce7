//! What the compiler says about each object: the user-facing half of every configuration error.

use std::fmt;

use serde::Serialize;

use super::ObjectRef;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or this version of it) is rejected.
    Error,
    /// The object is accepted; something about it deserves a look.
    Warning,
    /// The object is not ours (another ingress class) and is left alone.
    Ignored,
}

/// Why, in one word: becomes the `reason` of a status condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Reason {
    /// The document could not be read as YAML or as this kind.
    Malformed,
    /// A field has a value the compiler refuses.
    Invalid,
    /// A field names a feature this version does not implement.
    NotSupported,
    /// A reference names an object that does not exist or is itself rejected.
    RefNotFound,
    /// A Service named by a Backend, a backendRef or an Ingress does not exist.
    ServiceNotFound,
    /// A Secret the rule's authentication needs (htpasswd, JWKS, CA) does not exist.
    SecretNotFound,
    /// The Service exists but has no such port.
    PortNotFound,
    /// A reference names a kind of object Tidegate cannot send traffic to.
    InvalidKind,
    /// Another object already has this identity.
    Duplicate,
    /// The object belongs to another ingress class.
    OtherClass,
    /// A policy's target (a Route, or one of its rules) is not served.
    TargetNotFound,
    /// Two policies that apply to the same requests disagree; the message says which wins.
    Conflicted,
    /// A certificate reference names a Secret that is missing, of the wrong type, or holds an
    /// unusable certificate (bad PEM, key mismatch, expired).
    InvalidCertificateRef,
    /// An annotation that injects raw proxy configuration (ingress-nginx snippets).
    Refused,
    /// An annotation under a prefix Tidegate reads that it does not know.
    UnknownAnnotation,
}

impl Reason {
    /// The reason as a status-condition string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "Malformed",
            Reason::Invalid => "Invalid",
            Reason::NotSupported => "NotSupported",
            Reason::RefNotFound => "BackendNotFound",
            Reason::ServiceNotFound => "ServiceNotFound",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::PortNotFound => "PortNotFound",
            Reason::InvalidKind => "InvalidKind",
            Reason::Duplicate => "Duplicate",
            Reason::OtherClass => "OtherIngressClass",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::Conflicted => "Conflicted",
            Reason::InvalidCertificateRef => "InvalidCertificateRef",
            Reason::Refused => "Refused",
            Reason::UnknownAnnotation => "UnknownAnnotation",
        }
    }
}

/// One finding about one object (or one file that could not be read at all).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// The object at fault; `None` for a file that is not valid YAML.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// The file the object came from (standalone mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Path of the field at fault, e.g. `spec.rules[0].matches[1].path.value`.
    pub field: String,
    /// Error, warning or ignored.
    pub severity: Severity,
    /// Machine-readable reason.
    pub reason: Reason,
    /// What is wrong, for a person.
    pub message: String,
}

impl Diagnostic {
    /// An error about one field of one object.
    pub fn error(
        object: &ObjectRef,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: Some(object.clone()),
            file: None,
            field: field.into(),
            severity: Severity::Error,
            reason,
            message: message.into(),
        }
    }

    /// An error saying the field names a feature not implemented yet.
    pub fn not_supported(object: &ObjectRef, field: impl Into<String>, what: &str) -> Self {
        Self::error(
            object,
            field,
            Reason::NotSupported,
            format!("not supported yet: {what}"),
        )
    }

    /// Whether this finding is about an unresolved reference (status `ResolvedRefs`).
    pub fn is_unresolved_ref(&self) -> bool {
        matches!(
            self.reason,
            Reason::RefNotFound
                | Reason::ServiceNotFound
                | Reason::SecretNotFound
                | Reason::PortNotFound
                | Reason::InvalidKind
                | Reason::TargetNotFound
        )
    }

    /// Whether this finding rejects the object.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The same finding, attributed to a file.
    pub fn in_file(mut self, file: Option<&str>) -> Self {
        if self.file.is_none() {
            self.file = file.map(str::to_owned);
        }
        self
    }
}

/// `<Kind> <namespace>/<name>: <field>: <message> (<file>)`, the line `tidegate validate` prints.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.object, &self.file) {
            (Some(object), _) => write!(f, "{object}: ")?,
            (None, Some(file)) => write!(f, "{file}: ")?,
            (None, None) => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        match self.severity {
            Severity::Warning => f.write_str(" [warning]")?,
            Severity::Ignored => f.write_str(" [ignored]")?,
            Severity::Error => {}
        }
        if let (Some(_), Some(file)) = (&self.object, &self.file) {
            write!(f, " ({file})")?;
        }
        Ok(())
    }
}

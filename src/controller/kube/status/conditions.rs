//! Condition types and the reasons Tidegate writes besides [`model::Reason`](crate::model::Reason).

/// The object is valid (its own fields).
pub const ACCEPTED: &str = "Accepted";
/// Every reference (Backend, Service, port) resolves.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The object's current version is in the routing table the proxy serves.
pub const PROGRAMMED: &str = "Programmed";

/// `Accepted=True`.
pub const REASON_ACCEPTED: &str = "Accepted";
/// `ResolvedRefs=True`.
pub const REASON_RESOLVED: &str = "ResolvedRefs";
/// `Programmed=True`.
pub const REASON_PROGRAMMED: &str = "Programmed";
/// `Programmed=False`: an earlier, accepted version of the object still serves.
pub const REASON_LAST_ACCEPTED_SERVING: &str = "LastAcceptedVersionServing";
/// `Programmed=False`: nothing of the object is in the table.
pub const REASON_NOT_PROGRAMMED: &str = "NotProgrammed";

/// Longest condition message written (the API allows 32768; status should stay readable).
pub const MAX_MESSAGE: usize = 2048;

//! Condition types and the reasons Tidegate writes besides [`model::Reason`](crate::model::Reason).

/// The object is valid (its own fields).
pub const ACCEPTED: &str = "Accepted";
/// Every reference (Backend, Service, port) resolves.
pub const RESOLVED_REFS: &str = "ResolvedRefs";
/// The object's current version is in the routing table the proxy serves.
pub const PROGRAMMED: &str = "Programmed";

/// A Backend with `spec.dns`: its lookups answer.
pub const DNS_RESOLVED: &str = "DNSResolved";

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

/// `DNSResolved=True`: the last lookup answered with records.
pub const REASON_DNS_ANSWERED: &str = "Answered";
/// `DNSResolved=True`: the name has no records of the type (NOERROR, empty): no endpoints.
pub const REASON_DNS_NO_RECORDS: &str = "NoRecords";
/// `DNSResolved=False`: lookups fail; the last good answer serves until `maxStale`.
pub const REASON_DNS_STALE: &str = "StaleAnswer";
/// `DNSResolved=False`: lookups fail and no answer is left to serve.
pub const REASON_DNS_FAILED: &str = "LookupFailed";

/// Longest condition message written (the API allows 32768; status should stay readable).
pub const MAX_MESSAGE: usize = 2048;

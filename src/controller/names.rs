//! Kubernetes object-name rules, checked for standalone files (the apiserver checks them in a cluster).

/// An RFC 1123 subdomain: what `metadata.name` may be.
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    if name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be lower-case letters, digits, '-' and '.', starting and ending alphanumeric"
        ))
    }
}

/// An RFC 1123 label: what `metadata.namespace` may be.
pub fn dns_label(name: &str) -> Result<(), String> {
    if is_label(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} must be at most 63 lower-case letters, digits and '-', starting and ending alphanumeric"
        ))
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(dns_subdomain("shop.v2-api").is_ok());
        assert!(dns_subdomain("Shop").is_err());
        assert!(dns_subdomain("-x").is_err());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_label("default").is_ok());
        assert!(dns_label("a.b").is_err());
    }
}

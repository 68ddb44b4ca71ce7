//! Request-path normalization before matching, so `/public/../admin` cannot slip past a rule.

/// The path with `.` and `..` segments resolved (RFC 3986 §5.2.4), or `None` if it has none.
pub fn normalize(path: &str) -> Option<String> {
    // A dot segment starts the path or follows a '/': a path without "/." (nearly every one)
    // has none, which a pass over its bytes tells more cheaply than splitting it.
    if !path.starts_with('.') && !path.as_bytes().windows(2).any(|w| w == b"/.") {
        return None;
    }
    let has_dots = path.split('/').any(|s| s == "." || s == "..");
    if !has_dots {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut p = String::with_capacity(path.len());
    for s in &out {
        p.push('/');
        p.push_str(s);
    }
    if trailing_slash || p.is_empty() {
        p.push('/');
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn clean_paths_are_left_alone() {
        assert_eq!(normalize("/a/b/c"), None);
        assert_eq!(normalize("/a/.b/..c"), None);
        assert_eq!(normalize("/"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("/a/.well-known/b.html"), None);
        assert_eq!(normalize("./a").as_deref(), Some("/a"));
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(normalize("/public/../admin").as_deref(), Some("/admin"));
        assert_eq!(normalize("/a/./b").as_deref(), Some("/a/b"));
        assert_eq!(normalize("/a/b/..").as_deref(), Some("/a/"));
        assert_eq!(normalize("/../../etc").as_deref(), Some("/etc"));
        assert_eq!(normalize("/..").as_deref(), Some("/"));
        assert_eq!(normalize("/a/.").as_deref(), Some("/a/"));
    }
}

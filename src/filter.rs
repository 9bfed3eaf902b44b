//! Event-type filters (`types=user.*,order.created`).
//!
//! A filter is a list of patterns; an event matches if any pattern does.
//! Patterns are dot-separated: `*` matches exactly one segment, `>` (last
//! segment only) matches one or more remaining segments, anything else must
//! be equal.

/// A parsed `types` filter. The empty filter matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFilter {
    patterns: Vec<Vec<String>>,
}

/// A `types` value that is not a valid filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid types filter '{pattern}': {reason}")]
pub struct FilterError {
    pattern: String,
    reason: &'static str,
}

impl TypeFilter {
    /// Parses a comma-separated list of patterns.
    pub fn parse(spec: &str) -> Result<Self, FilterError> {
        let mut patterns = Vec::new();
        for pattern in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let error = |reason| FilterError { pattern: pattern.to_owned(), reason };
            let segments: Vec<String> = pattern.split('.').map(str::to_owned).collect();
            if segments.iter().any(String::is_empty) {
                return Err(error("empty segment"));
            }
            for (i, segment) in segments.iter().enumerate() {
                let wildcard = segment == "*" || segment == ">";
                if !wildcard && (segment.contains('*') || segment.contains('>')) {
                    return Err(error("'*' and '>' must be whole segments"));
                }
                if segment == ">" && i + 1 != segments.len() {
                    return Err(error("'>' must be the last segment"));
                }
            }
            patterns.push(segments);
        }
        Ok(Self { patterns })
    }

    /// True if the filter lets every event through.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether an event of type `event_type` passes.
    pub fn matches(&self, event_type: &str) -> bool {
        self.is_empty() || self.patterns.iter().any(|p| pattern_matches(p, event_type))
    }
}

fn pattern_matches(pattern: &[String], event_type: &str) -> bool {
    let mut segments = event_type.split('.');
    for want in pattern {
        if want == ">" {
            return segments.next().is_some();
        }
        match segments.next() {
            Some(got) if want == "*" || want == got => {}
            _ => return false,
        }
    }
    segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_segments() {
        let f = TypeFilter::parse("user.*,order.>").unwrap();
        assert!(f.matches("user.registered"));
        assert!(!f.matches("user.registered.twice"));
        assert!(!f.matches("user"));
        assert!(f.matches("order.created"));
        assert!(f.matches("order.payment.failed"));
        assert!(!f.matches("order"));
        assert!(!f.matches("payment.completed"));
    }

    #[test]
    fn exact_and_empty() {
        assert!(TypeFilter::parse("").unwrap().matches("anything"));
        let f = TypeFilter::parse("a.b").unwrap();
        assert!(f.matches("a.b"));
        assert!(!f.matches("a.bc"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(TypeFilter::parse("a.>.b").is_err());
        assert!(TypeFilter::parse("a..b").is_err());
        assert!(TypeFilter::parse("a.b*").is_err());
    }
}
